"""deploy/: every Kubernetes manifest valid against the API's schemas (offline, from kubernetes-validate),
the KServe example checked by hand, and the image, the manifests and the runtime agreeing on how the
server starts, stops, listens and runs."""

from __future__ import annotations

import copy
import json
import re

import kubernetes_validate
import pytest
from deploy_files import (
    DEPLOY,
    ROOT,
    core_v1_fields,
    core_v1_validator,
    documents,
    flags,
    only,
    quantity,
    read_dockerfile,
    read_dockerignore,
)

pytestmark = pytest.mark.unit

# The oldest Kubernetes the manifests claim (native gRPC probes are GA from 1.27) and the newest whose
# schemas the pinned kubernetes-validate (1.37.0) ships: a field either one lacks fails the test.
KUBERNETES_VERSIONS = ("1.27", "1.37")
PER_MODEL_HEALTH = re.compile(r"lstmserve\.v1\.PredictionService/[A-Za-z0-9_.-]+")
# Time between the server's drain deadline and SIGKILL, for TensorFlow's threads and the process to
# exit; much more only delays replacing a pod that hangs.
MIN_MARGIN_SECONDS, MAX_MARGIN_SECONDS = 5, 30
# Resident memory of the server with TensorFlow and the demo models.
SERVER_RSS_BYTES = 900e6


def kubernetes_docs() -> list[tuple]:
    return documents(DEPLOY / "kubernetes")


def manifests() -> list[dict]:
    return [doc for _, doc in kubernetes_docs()]


def server_container(deployment: dict) -> dict:
    return only_named(deployment["spec"]["template"]["spec"]["containers"], "lstmserve")


def only_named(items: list[dict], name: str) -> dict:
    found = [item for item in items if item["name"] == name]
    assert len(found) == 1, f"expected one item named {name!r} in {[i['name'] for i in items]}"
    return found[0]


# --- Kubernetes schemas -------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_manifest_is_valid(version):
    problems = []
    for path, doc in kubernetes_docs():
        where = path.relative_to(ROOT)
        if not isinstance(doc, dict):
            problems.append(f"{where}: an empty or non-object document")
            continue
        try:
            assert kubernetes_validate.validate(doc, version, strict=True) == version
        except kubernetes_validate.ValidationError as error:
            at = ".".join(str(p) for p in error.path)
            problems.append(f"{where} {doc['kind']}/{doc['metadata']['name']}: {at}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    assert not problems, "\n".join(problems)
    kinds = {doc["kind"] for doc in manifests()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_schema_check_rejects_what_the_api_server_would(version):
    """The validation above is strict and really reads the schemas: known mistakes are refused."""
    deployment = only(manifests(), "Deployment")
    misspelt = copy.deepcopy(deployment)
    server_container(misspelt)["readinessprobe"] = server_container(misspelt).pop("readinessProbe")
    named_port = copy.deepcopy(deployment)
    server_container(named_port)["livenessProbe"]["grpc"]["port"] = "grpc"  # gRPC probes take numbers only
    old_hpa_field = copy.deepcopy(only(manifests(), "HorizontalPodAutoscaler"))
    old_hpa_field["spec"]["metrics"][0]["resource"]["targetAverageUtilization"] = 70  # v2beta1's
    for broken in (misspelt, named_port, old_hpa_field):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


# --- The image ----------------------------------------------------------------------------------------

def test_image_starts_lstmserve_serve_on_the_mounted_repository():
    image = read_dockerfile()
    assert image.argv[:2] == ["lstmserve", "serve"], image.argv
    options = flags(image.argv)
    assert options["--model-dir"] == "/models"
    assert options["--host"] == "0.0.0.0"  # reachable from outside the container
    assert image.expose == {int(options["--port"]), int(options["--metrics-port"])}
    assert int(options["--grace-seconds"]) > 0


def test_image_installs_the_server_alone_at_the_pinned_versions():
    image = read_dockerfile()
    assert image.base.startswith("python:3.11-slim"), image.base
    installs = [run for run in image.runs if "pip install" in run]
    assert len(installs) == 1, installs
    assert re.search(r"-c \S*constraints\.txt", installs[0]), installs[0]
    assert re.search(r"\S*/client\b", installs[0]) and re.search(r"\S*/server\b", installs[0])
    assert "/server[cpu]" in installs[0], installs[0]  # TensorFlow's CPU build, not the CUDA one
    for unwanted in ("trainer", "requirements-dev", "-e ", "--editable"):
        assert unwanted not in installs[0], f"{unwanted!r} in {installs[0]}"


def test_image_runs_as_a_numeric_non_root_user():
    user, _, group = read_dockerfile().user.partition(":")
    assert user.isdigit() and int(user) > 0, "Kubernetes proves runAsNonRoot only for a numeric USER"
    assert not group or group.isdigit()


def test_build_context_holds_only_what_the_image_copies():
    patterns = read_dockerignore()
    assert patterns[0] == "*", "deny by default, so a new folder (a venv, models) never leaks in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {source.rstrip("/") for source in read_dockerfile().copy_sources}
    assert allowed == copied
    assert not allowed & {".venv", "models", ".git", "trainer", "tests"}


# --- The Deployment against the image -------------------------------------------------------------------

def test_deployment_starts_the_server_as_the_image_does():
    container = server_container(only(manifests(), "Deployment"))
    assert "command" not in container, "command would replace the image's ENTRYPOINT"
    assert container["args"] == read_dockerfile().cmd


def pre_stop_pause(container: dict) -> int:
    """Seconds the preStop hook holds the pod before SIGTERM: `sleep N`, or the sleep action."""
    hook = container.get("lifecycle", {}).get("preStop")
    if not hook:
        return 0
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"a preStop hook that is not a pause: {command}"
    return int(command[1])


def test_termination_grace_covers_the_pause_and_the_drain():
    deployment = only(manifests(), "Deployment")
    pod, container = deployment["spec"]["template"]["spec"], server_container(deployment)
    grace, pause = int(flags(container["args"])["--grace-seconds"]), pre_stop_pause(container)
    budget = pod["terminationGracePeriodSeconds"] - pause - grace
    assert MIN_MARGIN_SECONDS <= budget <= MAX_MARGIN_SECONDS, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} leaves {budget} s after "
        f"a {pause} s preStop pause and --grace-seconds {grace}")


def test_ports_agree_across_image_container_probes_and_services():
    deployment = only(manifests(), "Deployment")
    container = server_container(deployment)
    options = flags(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(options["--port"]), "metrics": int(options["--metrics-port"])}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    for service in (doc for doc in manifests() if doc["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"
        assert "grpc" in {port["name"] for port in service["spec"]["ports"]}


def test_probes_ask_grpc_health_for_the_server_and_for_one_model():
    container = server_container(only(manifests(), "Deployment"))
    assert PER_MODEL_HEALTH.fullmatch(container["readinessProbe"]["grpc"]["service"])
    assert container["livenessProbe"]["grpc"]["service"] == ""
    startup = container["startupProbe"]
    assert "grpc" in startup
    # Loading and compiling every batch size of several models takes minutes on one core.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_pods_run_unprivileged_on_a_read_only_root():
    deployment = only(manifests(), "Deployment")
    pod, container = deployment["spec"]["template"]["spec"], server_container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == read_dockerfile().user.partition(":")[0]
    hardening = container["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "TensorFlow and numba write to /tmp"
    models = mounts[flags(container["args"])["--model-dir"]]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    claims = {doc["metadata"]["name"] for doc in manifests() if doc["kind"] == "PersistentVolumeClaim"}
    assert claim["claimName"] in claims


def test_resources_fit_tensorflow_and_its_threads():
    deployment = only(manifests(), "Deployment")
    container = server_container(deployment)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert quantity(requests["memory"]) >= SERVER_RSS_BYTES
    assert quantity(limits["memory"]) >= quantity(requests["memory"])
    assert 1 <= quantity(requests["cpu"]) <= quantity(limits["cpu"])
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        for value in (env.get(name), read_dockerfile().env[name]):
            assert value is not None and 1 <= int(value) <= quantity(limits["cpu"]), (name, value)


def test_service_budget_and_autoscaler_select_the_deployment():
    deployment = only(manifests(), "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    for service in (doc for doc in manifests() if doc["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
    budget = only(manifests(), "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = only(manifests(), "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"} == {"cpu"}
    # A drain may take maxUnavailable pods; at least one must stay to answer.
    assert hpa["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"]


# --- KServe ---------------------------------------------------------------------------------------------

# ServingRuntimeSpec's fields in KServe 0.21 (its API types; no JSON schema for the CRDs is published
# in a package, so these few names stand in for one).
SERVING_RUNTIME_FIELDS = {
    "affinity", "annotations", "builtInAdapter", "containers", "disabled", "grpcDataEndpoint",
    "grpcEndpoint", "hostIPC", "httpDataEndpoint", "imagePullSecrets", "labels", "multiModel",
    "nodeSelector", "protocolVersions", "replicas", "resourceClaims", "schedulerName", "storageHelper",
    "supportedModelFormats", "tolerations", "volumes", "workerSpec"}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# ModelSpec is a core/v1 Container plus these; PredictorSpec a PodSpec plus the component extension.
MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}
COMPONENT_FIELDS = {"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher",
                    "labels", "annotations", "deploymentStrategy", "autoScaling", "storageUris"}
STORAGE_SCHEMES = {"gs", "s3", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf"}
# KServe renders a runtime's container as a Go template over the InferenceService's metadata.
PLACEHOLDER = re.compile(r"\{\{\s*\.(Name|Namespace|Labels\.\w+|Annotations\.\w+)\s*\}\}")


def kserve_problems(runtime: dict, service: dict, version: str) -> list[str]:
    """What KServe or the API server would refuse in the pair, or what would not start lstmserve."""
    problems = [f"{doc['kind']}: apiVersion {doc['apiVersion']}" for doc, api in
                ((runtime, "serving.kserve.io/v1alpha1"), (service, "serving.kserve.io/v1beta1"))
                if doc["apiVersion"] != api]
    spec = runtime["spec"]
    problems += [f"ServingRuntime spec.{key} is not a field" for key in set(spec) - SERVING_RUNTIME_FIELDS]
    problems += [f"protocol {p!r} unknown" for p in set(spec.get("protocolVersions", [])) - PROTOCOLS]
    container = json.loads(render(json.dumps(spec["containers"][0]), service["metadata"]))
    problems += schema_problems(container, "Container", version)
    problems += [p for volume in spec.get("volumes", []) for p in schema_problems(volume, "Volume", version)]
    problems += _runtime_container_problems(container, service)
    problems += _inference_service_problems(service, runtime, version)
    return problems


def render(text: str, metadata: dict) -> str:
    values = {"Name": metadata["name"], "Namespace": metadata.get("namespace", "default")}
    rendered = PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)
    assert "{{" not in rendered, f"a placeholder KServe does not fill: {rendered}"
    return rendered


def schema_problems(obj: dict, definition: str, version: str) -> list[str]:
    return [f"{definition} {'.'.join(map(str, e.path))}: {e.message}"
            for e in core_v1_validator(version, definition).iter_errors(obj)]


def _runtime_container_problems(container: dict, service: dict) -> list[str]:
    problems = []
    image_args = read_dockerfile().cmd
    expected = [arg if arg != "/models" else "/mnt/models" for arg in image_args]
    if container.get("args") != expected or "command" in container:
        problems.append(f"runtime args {container.get('args')} are not the image's with /mnt/models")
    port = int(flags(image_args)["--port"])
    if [(p.get("name"), p["containerPort"]) for p in container.get("ports", [])] != [("h2c", port)]:
        problems.append(f"runtime ports {container.get('ports')}: KServe wants one, h2c, on {port}")
    readiness = container.get("readinessProbe", {}).get("grpc", {}).get("service", "")
    if readiness != f"lstmserve.v1.PredictionService/{service['metadata']['name']}":
        problems.append(f"readiness asks for {readiness!r}, not this InferenceService's model")
    return problems


def _inference_service_problems(service: dict, runtime: dict, version: str) -> list[str]:
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    problems = [f"predictor.{key} is not a field" for key in
                set(predictor) - COMPONENT_FIELDS - core_v1_fields(version, "PodSpec")]
    container_part = {key: value for key, value in model.items() if key not in MODEL_FIELDS}
    problems += schema_problems({"name": "kserve-container", **container_part}, "Container", version)
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.append(f"model.runtime {model.get('runtime')!r} is not {runtime['metadata']['name']!r}")
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.append(f"model.modelFormat {model.get('modelFormat')} not among {formats}")
    if model.get("protocolVersion") not in runtime["spec"].get("protocolVersions", []):
        problems.append(f"model.protocolVersion {model.get('protocolVersion')!r} not the runtime's")
    if model.get("storageUri", "").partition("://")[0] not in STORAGE_SCHEMES:
        problems.append(f"storageUri {model.get('storageUri')!r} has no scheme KServe downloads from")
    return problems


def kserve_pair() -> tuple[dict, dict]:
    docs = [doc for _, doc in documents(DEPLOY / "kserve")]
    return only(docs, "ServingRuntime"), only(docs, "InferenceService")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kserve_runtime_and_inference_service_fit_together(version):
    runtime, service = kserve_pair()
    assert kserve_problems(runtime, service, version) == []
    # The V2 protocol over gRPC is the point of the example.
    assert service["spec"]["predictor"]["model"]["protocolVersion"] == "grpc-v2"


@pytest.mark.parametrize("mistake", ["field", "protocol", "runtime", "args", "port", "probe", "container",
                                     "predictor", "model"])
def test_the_kserve_check_finds_mistakes(mistake):
    runtime, service = kserve_pair()
    container, model = runtime["spec"]["containers"][0], service["spec"]["predictor"]["model"]
    if mistake == "field":
        runtime["spec"]["protocolVersion"] = runtime["spec"].pop("protocolVersions")
    elif mistake == "protocol":
        model["protocolVersion"] = "v2"  # REST, which the runtime does not offer
    elif mistake == "runtime":
        model["runtime"] = "kserve-tritonserver"
    elif mistake == "args":
        container["args"] = [a for a in container["args"] if a != "--grace-seconds"]
    elif mistake == "port":
        container["ports"][0]["name"] = "grpc"
    elif mistake == "probe":
        container["readinessProbe"]["grpc"]["service"] = "lstmserve.v1.PredictionService/other"
    elif mistake == "container":
        container["securityContext"]["readOnlyRootFileSystem"] = True  # readOnlyRootFilesystem
    elif mistake == "predictor":
        service["spec"]["predictor"]["minReplica"] = 1
    elif mistake == "model":
        model["resource"] = {"limits": {"cpu": "2"}}
    assert kserve_problems(runtime, service, KUBERNETES_VERSIONS[-1]) != []
