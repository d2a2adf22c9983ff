"""The checked-in generated code matches what `make proto` makes from protos/ today."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path):
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         *map(str, protos)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    checked_in = sorted(p.relative_to(ROOT / "client") for p in (ROOT / "client/lstmserve/v1")
                        .glob("*_pb2*.py*"))
    assert fresh == checked_in, "run `make proto` and commit the result"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (ROOT / "client" / p).read_bytes()]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"


def test_every_proto_declares_the_versioned_package():
    for proto in (ROOT / "protos/lstmserve/v1").glob("*.proto"):
        assert "package lstmserve.v1;" in proto.read_text(), proto
