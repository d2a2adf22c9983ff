"""The checked-in generated code matches what `make proto` makes from protos/ today."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
# Every folder of generated modules, relative to client/: one per proto package.
GENERATED_DIRS = ("lstmserve/v1", "lstmserve/inference/v2")


def test_generated_code_is_current(tmp_path):
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         *map(str, protos)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    checked_in = sorted(p.relative_to(ROOT / "client") for folder in GENERATED_DIRS
                        for p in (ROOT / "client" / folder).glob("*_pb2*.py*"))
    assert fresh == checked_in, "run `make proto` and commit the result"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (ROOT / "client" / p).read_bytes()]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"


def test_every_proto_declares_the_versioned_package():
    for proto in (ROOT / "protos/lstmserve/v1").glob("*.proto"):
        assert "package lstmserve.v1;" in proto.read_text(), proto


def test_the_open_inference_proto_keeps_the_published_package():
    # tritonclient and KServe call /inference.GRPCInferenceService/...: the package is the wire name.
    for proto in (ROOT / "protos/lstmserve/inference/v2").glob("*.proto"):
        assert "\npackage inference;\n" in proto.read_text(), proto


# Field numbers of the published definitions (KServe grpc_predict_v2.proto, Triton grpc_service.proto).
# The wire carries numbers, not names: a renumbered field would still compile and silently disagree.
PUBLISHED_FIELDS = {
    "ServerLiveResponse": {"live": 1},
    "ServerReadyResponse": {"ready": 1},
    "ModelReadyRequest": {"name": 1, "version": 2},
    "ModelReadyResponse": {"ready": 1},
    "ServerMetadataResponse": {"name": 1, "version": 2, "extensions": 3},
    "ModelMetadataRequest": {"name": 1, "version": 2},
    "ModelMetadataResponse": {"name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5},
    "ModelMetadataResponse.TensorMetadata": {"name": 1, "datatype": 2, "shape": 3},
    "InferParameter": {"bool_param": 1, "int64_param": 2, "string_param": 3, "double_param": 4,
                       "uint64_param": 5},
    "InferTensorContents": {"bool_contents": 1, "int_contents": 2, "int64_contents": 3,
                            "uint_contents": 4, "uint64_contents": 5, "fp32_contents": 6,
                            "fp64_contents": 7, "bytes_contents": 8},
    "ModelInferRequest": {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5,
                          "outputs": 6, "raw_input_contents": 7},
    "ModelInferRequest.InferInputTensor": {"name": 1, "datatype": 2, "shape": 3, "parameters": 4,
                                           "contents": 5},
    "ModelInferRequest.InferRequestedOutputTensor": {"name": 1, "parameters": 2},
    "ModelInferResponse": {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5,
                           "raw_output_contents": 6},
    "ModelInferResponse.InferOutputTensor": {"name": 1, "datatype": 2, "shape": 3, "parameters": 4,
                                             "contents": 5},
    "ModelRepositoryParameter": {"bool_param": 1, "int64_param": 2, "string_param": 3, "bytes_param": 4},
    "RepositoryIndexRequest": {"repository_name": 1, "ready": 2},
    "RepositoryIndexResponse": {"models": 1},
    "RepositoryIndexResponse.ModelIndex": {"name": 1, "version": 2, "state": 3, "reason": 4},
    "RepositoryModelLoadRequest": {"repository_name": 1, "model_name": 2, "parameters": 3},
    "RepositoryModelUnloadRequest": {"repository_name": 1, "model_name": 2, "parameters": 3},
}
PUBLISHED_RPCS = {
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
}


def test_open_inference_messages_carry_the_published_field_numbers():
    from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
    pool = v2.DESCRIPTOR.pool
    for message, fields in PUBLISHED_FIELDS.items():
        descriptor = pool.FindMessageTypeByName(f"inference.{message}")
        assert {f.name: f.number for f in descriptor.fields} == fields, message
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {method.name for method in service.methods} == PUBLISHED_RPCS
