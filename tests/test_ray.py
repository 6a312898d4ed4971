"""Training a plan on Ray: an embedded instance, a worker killed mid-run, Ctrl-C, and a two-node cluster.

Every server here talks over loopback only (the tests run in a loopback-only network namespace, see
conftest) and is stopped by the test that started it; no Ray process outlives its test.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from labcore.engine import executor
from labcore.store import runs
from labcore.exercises.params import notebook_stems
from labcore.engine.plan import build_plan, profile_runs

from .conftest import needs_cifar, needs_isolated_ray, needs_mnist, ray_processes, stored_runs, wait_ray_gone

pytestmark = [needs_isolated_ray, needs_mnist, needs_cifar, pytest.mark.ray]
ROOT = Path(__file__).resolve().parent.parent


def _cmdline(p: psutil.Process) -> str:
    """The process's command line, or "" once it has exited (gone, or a zombie not yet reaped)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # NoSuchProcess, ZombieProcess, AccessDenied
        return ""


@pytest.fixture
def env(tmp_path):
    """A private run store and report folder for the subprocesses; no Ray left behind afterwards."""
    e = {**os.environ, "LABCORE_RUNS": str(tmp_path / "runs"), "LABCORE_REPORTS": str(tmp_path / "reports"),
         "LABCORE_TRACKING": "disabled", "LABCORE_HEADLESS": "1"}
    e.pop("RAY_ADDRESS", None)
    yield e
    assert not wait_ray_gone(), "no Ray process outlives its test"


def test_smoke_plan_on_embedded_ray_then_report_retrains_nothing(smoke_build):
    """The session's smoke build trained its plan on an embedded Ray (2 CPUs); `make report` then trained and
    rewrote nothing, and every notebook rendered from the store."""
    assert smoke_build.executor == "ray"
    n = len(profile_runs("smoke"))  # the smoke plan's distinct runs (counted by hand in test_plan)
    assert f"plan smoke: {n} runs, 0 stored, {n} pending" in smoke_build.train, \
        "the smoke build trains from an empty store (run this test in a fresh session)\n" + smoke_build.train[:2000]
    assert "Ray cluster: 1 node, 2 CPUs" in smoke_build.train and f"run {n}/{n} ok" in smoke_build.train
    assert len(smoke_build.stored_after_train) == n and not smoke_build.ray_left, "no Ray process outlives training"
    assert f"plan smoke: {n} runs, {n} stored, 0 pending" in smoke_build.report
    assert smoke_build.stored_after_report == smoke_build.stored_after_train, "the report trained and rewrote nothing"
    for stem in notebook_stems():
        rec = json.loads((smoke_build.reports / f"{stem}.json").read_text())
        assert rec["status"] == "ok", stem
        if stem in ("02_cnn_depth", "03_residual"):  # the notebooks that count what they trained themselves
            assert rec["metrics"]["trained_now"] == 0, stem


def test_a_killed_worker_is_retried_and_every_run_is_stored_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_HEADLESS", "1")
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):  # connect() sets them; restore afterwards
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    store = runs.RunStore(tmp_path)
    puts, real_put = [], store.put
    monkeypatch.setattr(store, "put", lambda result, *a, **k: puts.append(result.key) or real_put(result, *a, **k))
    killed = []

    def kill_first_worker() -> None:
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            for p in psutil.process_iter(["cmdline"]):
                if "ray::ray_task" in " ".join(p.info["cmdline"] or []):
                    time.sleep(0.3)  # mid-run: it has started training
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    out = executor.train(build_plan("smoke", ["04_gradient_flow"]), executor="ray", cpus=2, tracking="disabled", store=store)
    killer.join(timeout=5)
    planned = profile_runs("smoke", ["04_gradient_flow"])
    assert killed, "a worker was killed mid-run"
    assert not out.lost and not out.failed and len(out.trained) == len(planned)
    assert sorted(puts) == sorted(p.key for p in planned), "every run stored exactly once"
    assert all(store.state(p.cfg, p.checkpoints) == "stored" for p in planned)
    assert not [d for d in store.root.iterdir() if d.name.startswith(".") and d.name not in (".locks", ".resume")], \
        "nothing half-written"
    assert not list((store.root / ".resume").glob("*")), "finished runs keep no resume state"
    assert not wait_ray_gone()


def test_ctrl_c_stops_cleanly_and_the_next_pass_trains_only_the_rest(env, tmp_path):
    cmd = [sys.executable, "-m", "labcore", "train", "--profile", "smoke", "--only", "04_gradient_flow",
           "--executor", "ray", "--cpus", "2"]
    n = len(profile_runs("smoke", ["04_gradient_flow"]))  # 10 runs: one stored before Ctrl-C, the rest after
    # As from a terminal: a shell without job control starts background jobs with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler, so the test would depend on how pytest itself was started.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:  # interrupt once the first run is stored
        lines.append(line)
        if f"run 1/{n}" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted: finished runs are stored" in rest
    assert not wait_ray_gone(), "no Ray process left after Ctrl-C"
    done = len(stored_runs(tmp_path / "runs"))
    assert 1 <= done < n
    # `make train` again, as a user reruns it: with no EXECUTOR, the few seconds left are trained in-process
    # (a second embedded Ray would only add its start-up; the first pass was the one to stop cleanly).
    again = subprocess.run(cmd[:cmd.index("--executor")], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{n} runs, {done} stored, {n - done} pending" in again.stdout
    assert f"trained {n - done} run" + ("" if n - done == 1 else "s") in again.stdout


@contextlib.contextmanager
def _two_node_cluster(env: dict, port: str) -> Iterator[dict]:
    """A Ray head and a second node on this machine, one CPU each, with token authentication and no dashboard;
    yields the driver's environment (RAY_ADDRESS set). Everything is stopped afterwards."""
    ray = str(Path(sys.executable).parent / "ray")
    cluster = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "labcore-test-" + os.urandom(16).hex()}
    start = [ray, "start", "--num-cpus=1", "--disable-usage-stats"]
    try:
        head = subprocess.run([*start, "--head", f"--port={port}", "--include-dashboard=false"], env=cluster,
                              capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        node = subprocess.run([*start, f"--address=127.0.0.1:{port}"], env=cluster, capture_output=True, text=True,
                              timeout=120)
        assert node.returncode == 0, node.stdout[-2000:] + node.stderr[-2000:]
        yield {**cluster, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        subprocess.run([ray, "stop", "--force"], env=cluster, capture_output=True, timeout=120)


def test_two_nodes_with_token_authentication_and_a_node_that_leaves_mid_run(env, tmp_path):
    """A head and a second node on this machine (loopback only, no dashboard), reached through RAY_ADDRESS: a
    driver without the token is refused; then the second node's raylet and its workers are killed while one of
    them trains, that run is trained again on the head, and every run of the plan ends up stored exactly once.
    (One cluster for both: starting one costs about 25 s here.)"""
    n = len(profile_runs("smoke", ["04_gradient_flow"]))  # 10 runs
    with _two_node_cluster(env, "6398") as driver:
        unauthenticated = {k: v for k, v in driver.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        cmd = [sys.executable, "-m", "labcore", "train", "--profile", "smoke", "--only", "04_gradient_flow",
               "--executor", "ray"]
        refused = subprocess.run(cmd, cwd=ROOT, env=unauthenticated, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "without token authentication" in refused.stderr
        assert not stored_runs(tmp_path / "runs"), "a refused driver trains nothing"
        raylets = sorted((p for p in ray_processes() if "raylet" in _cmdline(p)), key=lambda p: p.create_time())
        assert len(raylets) == 2, "a head and a second node"
        second = raylets[-1]  # started last: the second node's
        proc = subprocess.Popen(cmd, cwd=ROOT, env=driver, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed, deadline = [], time.time() + 240
        while not killed and time.time() < deadline and proc.poll() is None:
            busy = [c for c in second.children(recursive=True) if "ray::ray_task" in _cmdline(c)]
            if busy:  # the node is training a run: it leaves now, workers and all
                for victim in [second, *second.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        victim.send_signal(signal.SIGKILL)
                        killed.append(victim.pid)
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=600)
    assert killed, "the second node was killed while it trained"
    assert proc.returncode == 0, out[-3000:]
    assert "Ray cluster: 2 nodes, 2 CPUs" in out and f"run {n}/{n} ok" in out and "not trained" not in out
    assert len(stored_runs(tmp_path / "runs")) == n, "every run stored exactly once"


_GPU_MAPPING = """
import json, os
from labcore.engine import raypass

def where():
    import os
    import ray
    from labcore.engine import raypass
    ids = [str(g) for g in ray.get_gpu_ids()]
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    return os.getpid(), ids, os.environ.get("CUDA_VISIBLE_DEVICES"), raypass.task_device(ids), share

assert raypass.connect(None, cpus=4, gpus=2)
import ray  # only now: Ray reads its authentication settings, which connect() set, when first imported
try:
    gpu = ray.get([raypass.remote_task(1, 1.0, fn=where).remote() for _ in range(4)])
    cpu = ray.get(raypass.remote_task(1, 0, fn=where).remote())
    quarter = ray.get([raypass.remote_task(1, 0.25, fn=where).remote() for _ in range(8)])
finally:
    ray.shutdown()
print(json.dumps({"gpu": gpu, "cpu": cpu, "quarter": quarter}))
"""


def test_ray_gives_each_gpu_run_its_own_gpu_in_a_fresh_worker_and_a_cpu_run_none(env):
    """With two (pretend) GPUs, each GPU task sees exactly the GPU Ray assigned it, as its only visible device, in
    a worker of its own (a reused worker stays pinned to its first GPU); a task given no GPU trains on the CPU.
    In a process of its own: Ray keeps the token of the first cluster a process joined."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", _GPU_MAPPING], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    gpu, (_, ids, _, device, _) = seen["gpu"], seen["cpu"]
    assert all(len(i) == 1 and visible == i[0] and dev == "cuda" for _, i, visible, dev, _ in gpu), gpu
    assert {i[0] for _, i, *_ in gpu} == {"0", "1"}, "both GPUs used"
    assert len({pid for pid, *_ in gpu}) == 4, "a fresh worker per GPU run"
    assert ids == [] and device == "cpu"
    # GPUS_PER_RUN=0.25: each task sees one GPU, told it has a quarter (what share_gpu caps its memory at).
    assert all(len(i) == 1 and dev == "cuda" and share == 0.25 for _, i, _, dev, share in seen["quarter"]), seen
    assert {i[0] for _, i, *_ in seen["quarter"]} == {"0", "1"}


_OUT_OF_MEMORY_ONCE = """
import json, os, sys
from labcore.engine import executor, raypass
from labcore.engine.plan import build_plan

marker = sys.argv[1]

def flaky(*args):
    # The first task anywhere in the cluster runs out of (pretend) device memory at its first optimizer step.
    import os
    import torch
    from labcore.engine import raypass
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return raypass.ray_task(*args)
    real = torch.optim.Adam.step
    def step(self, *a, **k):
        torch.optim.Adam.step = real  # once: the worker may be reused for another run
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (injected by the test)")
    torch.optim.Adam.step = step
    return raypass.ray_task(*args)

real_remote_task = raypass.remote_task
raypass.remote_task = lambda cpus, gpus, fn=None: real_remote_task(cpus, gpus, fn=flaky)
out = executor.train(build_plan("smoke", ["01_mlp_baseline"]), executor="ray", cpus=2, tracking="disabled")
print(json.dumps({"trained": len(out.trained), "failed": len(out.failed), "lost": len(out.lost)}))
"""


def _with_one_fault(script: str, env: dict, tmp_path: Path) -> tuple[dict, str]:
    """Run `script` (which injects one out-of-memory error in the first Ray task) in a process of its own (Ray keeps
    the token of the first cluster a process joined); returns its last line as JSON, and its output."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    marker = tmp_path / "injected"
    proc = subprocess.run([sys.executable, "-c", script, str(marker)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert marker.exists(), "the fault was injected"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_a_run_lost_to_memory_in_a_ray_task_is_tried_again_and_stored_as_trained(env, tmp_path):
    """Out of memory in a Ray task is the machine's fault, not the config's: the run is tried again at the end,
    alone, and stored as trained; nothing is stored as failed."""
    last, out = _with_one_fault(_OUT_OF_MEMORY_ONCE, env, tmp_path)
    n = len(profile_runs("smoke", ["01_mlp_baseline"]))
    assert last == {"trained": n, "failed": 0, "lost": 0}
    assert "lost to out of device memory; trying it once more at the end, each alone on its device" in out
    stored = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("v*/*/result.json")]
    assert len(stored) == n and all(r["status"] == "ok" for r in stored)


_FUSED_OUT_OF_MEMORY = _OUT_OF_MEMORY_ONCE.split("real_remote_task")[0] + """
from labcore.engine import jobs
from labcore.store import runs
from labcore.core.config import RunConfig
from labcore.store.planned import Planned

real_remote_task = raypass.remote_task
raypass.remote_task = lambda cpus, gpus, fn=None: real_remote_task(cpus, gpus, fn=flaky)
cfg = RunConfig.build({"name": "mnist", "val_size": 100, "subset": 256, "test_subset": 100},
                      {"family": "mlp", "depth": 1, "width": 8}, {"epochs": 1})
group = [Planned(cfg.replace(seed=s)) for s in (0, 1, 2)]
todo = jobs.group_jobs(group, __import__("torch").device("cpu"), "on")
assert [len(j) for j in todo] == [3]
keys = {p.key: 1.0 for p in group}
store = runs.RunStore()
progress = jobs.Progress(keys, 2, headless=True, jobs=todo)
out = raypass.train_ray(todo, keys, keys, store, "disabled", None, 1, 0.0, 2, progress, "test")
print(json.dumps({"trained": len(out.trained), "failed": len(out.failed), "lost": len(out.lost),
                  "fused": [list(store.get(p.cfg).fused) for p in group]}))
"""


def test_fused_seeds_lost_in_a_ray_task_train_again_each_alone(env, tmp_path):
    """A fused job that runs out of memory on a Ray worker: its runs are tried again at the end, each alone, and
    all stored as trained (none failed)."""
    last, out = _with_one_fault(_FUSED_OUT_OF_MEMORY, env, tmp_path)
    assert last == {"trained": 3, "failed": 0, "lost": 0, "fused": [[], [], []]}
    assert "and 2 more seeds, fused lost to out of device memory; trying its runs alone at the end" in out
