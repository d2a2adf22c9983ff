"""Readers for deploy/: the Dockerfile's instructions, YAML documents, server flags, Kubernetes
quantities, and the core/v1 schemas that kubernetes-validate ships (for objects nested in KServe's)."""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


@dataclass
class Dockerfile:
    """The instructions that matter here, as Docker reads them (continuations joined, comments dropped)."""
    base: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    env: dict[str, str] = field(default_factory=dict)
    expose: set[int] = field(default_factory=set)
    copy_sources: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd


def read_dockerfile(path: Path = DEPLOY / "Dockerfile") -> Dockerfile:
    image = Dockerfile()
    for line in _logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            image.base = rest.split()[0]
        elif instruction in ("ENTRYPOINT", "CMD"):
            setattr(image, instruction.lower(), _exec_form(instruction, rest))
        elif instruction == "USER":
            image.user = rest
        elif instruction == "ENV":
            image.env.update(pair.split("=", 1) for pair in shlex.split(rest))
        elif instruction == "EXPOSE":
            image.expose.update(int(port.split("/")[0]) for port in rest.split())
        elif instruction == "COPY":
            *sources, _destination = [w for w in rest.split() if not w.startswith("--")]
            image.copy_sources.extend(sources)
        elif instruction == "RUN":
            image.runs.append(rest)
    return image


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def _exec_form(instruction: str, rest: str) -> list[str]:
    # Shell form would run /bin/sh as PID 1, and sh does not pass SIGTERM on: no graceful drain.
    try:
        argv = json.loads(rest)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{instruction} must be in exec form (a JSON array): {rest}") from error
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), rest
    return argv


def read_dockerignore(path: Path = ROOT / ".dockerignore") -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def documents(folder: Path) -> list[tuple[Path, dict | None]]:
    """Every YAML document of every file under folder, with its file."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))
    return [(path, doc) for path in files for doc in yaml.safe_load_all(path.read_text())]


def only(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def flags(argv: list[str]) -> dict[str, str]:
    """`--name value` and `--name=value` pairs, as argparse reads them."""
    parsed, i = {}, 0
    while i < len(argv):
        name, equals, value = argv[i].partition("=")
        if name.startswith("--") and not equals and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 1
        if name.startswith("--"):
            parsed[name] = value
        i += 1
    return parsed


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "": 1}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1Gi", 2) as a plain number of cores or bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(text))
    assert match, f"not a quantity: {text!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def core_v1_validator(version: str, definition: str) -> jsonschema.Draft202012Validator:
    """A strict validator for one core/v1 definition (Container, Volume, PodSpec...) from the schemas
    kubernetes-validate ships, for objects that sit inside resources it has no schema for."""
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads((folder / f"v{version}.0-local-strict" / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ Registry()
    reference = f"{definitions['$id']}#/$defs/io.k8s.api.core.v1.{definition}"
    return jsonschema.Draft202012Validator({"$ref": reference}, registry=registry)


def core_v1_fields(version: str, definition: str) -> set[str]:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads((folder / f"v{version}.0-local-strict" / "_definitions.json").read_text())
    return set(definitions["$defs"][f"io.k8s.api.core.v1.{definition}"]["properties"])
