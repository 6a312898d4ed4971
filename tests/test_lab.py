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
    proc, base, token, url = _start_lab(tmp_path)
    try:
        assert f"{base.rsplit(':', 1)[1]}/lab/tree/notebooks?token={token}" in url
        assert urllib.request.urlopen(url.replace("localhost", "127.0.0.1"), timeout=30).status == 200, \
            "the printed URL opens JupyterLab"
    finally:
        _stop(proc)


def _start_lab(tmp_path, env_extra=None):
    """`make lab` on a free loopback port (its own process group); returns (process, base URL, token, printed URL)."""
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path), **(env_extra or {})}
    env.pop("LABCORE_HEADLESS", None)
    proc = subprocess.Popen(["make", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    line = proc.stdout.readline()
    while line and "JupyterLab: open" not in line:
        line = proc.stdout.readline()
    url = re.search(r"open (http://localhost:\d+/lab/tree/notebooks\?token=\w+)", line).group(1)
    token = re.search(r"token=(\w+)", url).group(1)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            return proc, base, token, url
        except OSError:
            assert proc.poll() is None, "jupyter exited"
            time.sleep(1)
    raise AssertionError("JupyterLab did not answer")


def _stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _execute(ws, code: str, timeout: float = 300) -> list[dict]:
    """Run `code` in the kernel behind the websocket `ws`; its iopub outputs (stream, display, result, error)."""
    import json
    import uuid

    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": "t",
                                   "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
                        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                                    "allow_stdin": False, "stop_on_error": True}}))
    outputs, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id or msg["channel"] != "iopub":
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
        if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
            outputs.append({"type": msg["msg_type"], **msg["content"]})
    raise AssertionError(f"no answer within {timeout} s to: {code[:200]}")


@pytest.mark.slow
def test_a_notebook_in_jupyterlab_at_a_real_profile_reads_the_stored_build_and_trains_nothing(smoke_build, tmp_path):
    """Through JupyterLab's REST and kernel APIs (no browser): notebook 01 with profile = "smoke" runs against the
    session's smoke build, shows its real results and trains nothing; a run that is not stored is named with the
    command that trains it. The server stops and leaves nothing behind."""
    import json

    import nbformat
    import psutil
    import websocket

    from .conftest import stored_runs

    store = Path(os.environ["LABCORE_RUNS"])
    before = stored_runs(store)
    proc, base, token, _ = _start_lab(tmp_path)
    try:
        req = urllib.request.Request(f"{base}/api/kernels?token={token}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        kernel = json.loads(urllib.request.urlopen(req, timeout=60).read())
        ws = websocket.create_connection(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel['id']}/channels"
                                         f"?token={token}", timeout=300)
        nb = nbformat.read(ROOT / "notebooks" / "01_mlp_baseline.ipynb", as_version=4)
        _execute(ws, "import os; os.chdir('notebooks')")
        outputs = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            code = cell.source + ('\nprofile = "smoke"' if "parameters" in cell.metadata.get("tags", []) else "")
            outputs += _execute(ws, code)
            errors = [o for o in outputs if o["type"] == "error"]
            assert not errors, errors[0]["ename"] + ": " + errors[0]["evalue"]
        shown = json.dumps(outputs)
        assert "application/vnd.labcore.result+json" in shown and "image/png" in shown, "results and figures shown"
        assert "2,000 training, 1,000 validation and 1,000 test images" in shown, "the smoke profile's data, not the defaults"
        # A setting that is not in the store: named, with the command; nothing trained in the kernel.
        missing = _execute(ws, 'train = {**train, "epochs": 9}\n'
                               'runs.fetch(ex.plan(data, model, train, seeds, None)["runs"], device=device, '
                               'tracking=tracking, notebook=ex.NOTEBOOK, profile=profile)')
        assert missing[-1]["type"] == "error" and missing[-1]["ename"] == "RunsMissing"
        assert "`make train PROFILE=smoke ONLY=01_mlp_baseline` trains it" in missing[-1]["evalue"]
        assert "1 run this notebook needs is not in the run store" in missing[-1]["evalue"]
        assert "Set train_missing = True there to train it in this kernel" in missing[-1]["evalue"]
        ws.close()
    finally:
        _stop(proc)
    assert stored_runs(store) == before, "nothing was trained or rewritten in the kernel"
    left = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not left, "the server and its kernels are gone"
