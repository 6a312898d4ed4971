"""`make lab` starts JupyterLab for any user, root included, and prints the URL that opens it."""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_prints_a_url_that_opens_the_lab(tmp_path):
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    proc = subprocess.Popen(["make", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        while line and "JupyterLab: open" not in line:
            line = proc.stdout.readline()
        url = re.search(r"open (http://localhost:\d+/lab\?token=\w+)", line).group(1)
        assert f":{port}/" in url
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(url.replace("localhost", "127.0.0.1"), timeout=5).status
            except OSError:
                assert proc.poll() is None, "jupyter exited: " + proc.stdout.read()[-2000:]
                time.sleep(1)
        assert status == 200, "the printed URL opens JupyterLab"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
