"""The SDK installs on its own, without TensorFlow, and calls a real server."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def test_client_only_venv_calls_the_server(tmp_path, demo_server):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
         str(ROOT / "client")], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True).stdout
    names = {line.split()[0].lower() for line in listed.splitlines()[2:] if line.strip()}
    assert "lstmserve-client" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "h5py"}, names
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from lstmserve.client import Client
        with Client("127.0.0.1:{demo_server.port}", model="seed") as client:
            y = client.predict(np.array([0.0, 0.1, 0.2, 0.3, 0.4]).reshape(5, 1, 1))
            with client.session() as session:  # a window session of one step: Predict on that step
                step = session.step(np.array([[0.3]]))
        assert np.allclose(step.last, y[3]), (step.last, y[3])
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        print(y.shape)
    """)
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(5, 1)"
    cli = subprocess.run([str(venv / "bin" / "lstmserve"), "--help"], capture_output=True, text=True)
    commands = {line.split()[0] for line in cli.stdout.splitlines() if line.startswith("    ")}
    assert commands == {"forecast", "models", "predict"}, cli.stdout
