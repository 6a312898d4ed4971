"""The GPU path proven by one prepared command, on an offline GPU node that already has PyTorch (as on many
clusters, and the lent H200 machine).

    make bundle                  # with the package registry: .gpu-bundle/, what the node lacks (labcore.engine.bundle)
    make gpu-check               # on the node, in one command: writes gpu-check.json and gpu-check.log
    make gpu-check DEVICE=cpu    # here: the same script on tiny sizes (the test suite runs it, so it cannot rot)

It installs the bundle's wheels into a temporary folder (never into the node's Python) where the notebook stack is
missing, then runs each part on its own, so that one failing part still leaves the others' figures in the JSON:
the `gpu`-marked tests on the device, the smoke notebooks trained and rendered there, the calibration of `full`,
and He et al.'s ResNets timed alone, fused and sharing the device.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from labcore.engine.bundle import BUNDLE, install
from labcore.files import replacing
from labcore.paths import PROJECT_ROOT

def _part(result: dict, name: str, fn, log) -> None:
    """Run one part of the check; its failure is recorded, not fatal."""
    start = time.perf_counter()
    log(f"--- {name}")
    try:
        result[name] = fn()
    except BaseException as exc:  # noqa: BLE001 - the JSON must say what failed, whatever it was
        if isinstance(exc, KeyboardInterrupt):
            raise
        result[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:500]}"}
    result.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
    log(f"{name}: {json.dumps(result[name], default=str)[:2000]}")


def software(device: str, env: dict[str, str]) -> dict[str, Any]:
    """The GPU (or CPU) and the software that ran the check (the notebook stack as the children find it, `env`)."""
    import torch

    from labcore.machine import device_info, pick_device
    from labcore.store.identity import git_state

    dev = pick_device(device)
    info = {"device": device_info(dev), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "git": git_state()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(gpu=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count)
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + sys.path  # the bundle's site first
    for name in ("papermill", "nbconvert", "ipykernel", "numpy", "pandas", "matplotlib"):
        dist = next(iter(metadata.distributions(name=name, path=path)), None)
        info[name] = dist.version if dist else None
    return info


# On the CPU (tiny sizes) the suite itself runs every `gpu` test: the check runs only these, to prove its own machinery.
TINY_TESTS = "fit_on_the_device_agrees_with_the_cpu or bf16_trains or fused_runs_are_stored_as_separate_runs"


def run_tests(out: Path, device: str, env: dict[str, str], tiny: bool = False) -> dict[str, Any]:
    """The `gpu`-marked tests (tests/test_gpu.py, tests/test_fused.py) on `device` (`tiny`: TINY_TESTS of them):
    passed, failed, skipped."""
    import xml.etree.ElementTree as ET

    xml = out / "gpu-tests.xml"
    env = {**env, "LABCORE_TEST_DEVICE": device}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu and not slow", "tests/test_gpu.py", "tests/test_fused.py", "-q",
           "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={xml}"] + (["-k", TINY_TESTS] if tiny else [])
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, failed, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "skipped"))
    errors = int(suite.get("errors", 0))
    return {"passed": n - failed - errors - skipped, "failed": failed + errors, "skipped": skipped,
            "tail": proc.stdout[-1500:]}


def notebooks(device: str, tiny: bool, work: Path, env: dict[str, str]) -> dict[str, str]:
    """The smoke profile's notebooks (only 01 when `tiny`) trained and rendered on `device`: status per notebook."""
    env = {**env, "LABCORE_RUNS": str(work / "runs"), "LABCORE_REPORTS": str(work / "reports"),
           "LABCORE_TRACKING": "disabled", "LABCORE_HEADLESS": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every notebook's device "auto" then means the CPU
    cmd = [sys.executable, "-m", "labcore", "report", "--profile", "smoke", "--executor", "local"]
    if tiny:
        cmd += ["--only", "01_mlp_baseline"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    status = {}
    for f in sorted((work / "reports" / "smoke").glob("[0-9][0-9]_*.json")):
        rec = json.loads(f.read_text())
        status[rec["notebook"]] = rec["status"] if rec["status"] == "ok" else f"failed: {rec.get('error')}"
    if not status:
        status["error"] = (proc.stdout[-800:] + proc.stderr[-800:]).strip()
    return status


def estimate(device: str, tiny: bool, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The calibration of the full profile's architectures on `device` (quick's 01 when `tiny`), and the plan's
    compute: one run at a time (FUSE=off, the sum of the estimates) and with seeds fused where that pays there.
    Measured in a child process whose cache is a fresh folder: a calibration made here and now (the project's own
    cache, where the timing part records what packs best on this card, is left alone)."""
    call = f"print(json.dumps(estimate_here({device!r}, {tiny!r}, {str(work)!r})))"
    proc = subprocess.run([sys.executable, "-c", f"import json; from labcore.engine.gpucheck import estimate_here; {call}"],
                          cwd=PROJECT_ROOT, env={**env, "LABCORE_CACHE": str(work / "cache")}, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError((proc.stdout[-500:] + proc.stderr[-1500:]).strip())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def estimate_here(device: str, tiny: bool, work: str) -> dict[str, Any]:
    """`estimate`'s figures, computed in this process (a child of the check with its own LABCORE_CACHE)."""
    from labcore.engine import plan
    from labcore.store import runs

    profile, only = ("quick", ["01_mlp_baseline"]) if tiny else ("full", None)  # tiny: 3 MLP seeds, fused on a CPU
    d = plan.describe(plan.build_plan(profile, only), device=device, store=runs.RunStore(Path(work) / "empty-store"),
                      fuse="auto")
    return {"profile": profile, "runs": len(d["planned"]), "one_at_a_time_s": d["alone_seconds"],
            "fused_s": d["pending_seconds"], "fused_runs": sum(n > 1 for n in d["members"].values()),
            "device": d["device"]}


def _steps_command(device: str, depth: int, n: int, width: int, members: int) -> list[str]:
    """A fresh Python that prints steps(...): each timing in its own process, so runs sharing the GPU are real
    separate processes and no timing inherits another's caches."""
    call = f"print(steps({device!r}, {depth}, {n}, {width}, {members}))"
    return [sys.executable, "-c", f"from labcore.engine.gpucheck import steps; {call}"]


def timing(device: str, tiny: bool, env: dict[str, str]) -> dict[str, Any]:
    """He et al.'s ResNet-20 and -56 (width 16, batch 128, CIFAR-sized inputs on the device) for a few hundred
    steps: one run alone; 4 seeds fused into one model (labcore.engine.fused); and 4 runs at once in separate processes
    sharing the device (fractional). Sizes are 2 and a depth-8 width-4 net when `tiny`."""
    out: dict[str, Any] = {}
    steps, runs_at_once = (5, 2) if tiny else (300, 4)
    for depth in ((8,) if tiny else (20, 56)):
        cmd = _steps_command(device, depth, steps, 4 if tiny else 16, 1)
        start = time.perf_counter()
        alone = float(subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                     check=True).stdout.split()[-1])
        fused_cmd = _steps_command(device, depth, steps, 4 if tiny else 16, runs_at_once)
        fused = float(subprocess.run(fused_cmd, cwd=PROJECT_ROOT, env=env, capture_output=True,
                                     text=True, check=True).stdout.split()[-1])
        procs = [subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(runs_at_once)]
        shared = [float(p.communicate()[0].split()[-1]) for p in procs]
        wall = time.perf_counter() - start
        gains = {"fused": round(runs_at_once * alone / fused, 2), "fractional": round(runs_at_once * alone / max(shared), 2)}
        out[f"resnet{depth}"] = {"steps": steps, "runs": runs_at_once, "alone_s_per_step": alone / steps,
                                 "fused_s_per_step": fused / steps, "shared_s_per_step": max(shared) / steps,
                                 "throughput_gain": gains, "fastest": max(gains, key=gains.get) if max(gains.values()) > 1
                                 else "one at a time", "wall_s": round(wall, 1)}
    if device == "cuda":  # FUSE=auto follows what packed the deepest net best on this card (He et al.'s dominate)
        from labcore.engine.fused import record_packing
        from labcore.machine import pick_device

        deepest = out[f"resnet{max(int(k.removeprefix('resnet')) for k in out)}"]
        out["recorded"] = str(record_packing(pick_device("cuda"), deepest["fastest"], out))
    return out


def steps(device: str, depth: int, n: int, width: int, members: int = 1) -> float:
    """Seconds for `n` training steps of He et al.'s CIFAR ResNet (after 5 warm-up steps), on random data; of
    `members` seeds fused into one model when more than 1 (labcore.core.step: the whole group's steps)."""
    import torch

    from labcore.core.config import ModelConfig, TrainConfig
    from labcore.core.models import build_model
    from labcore.core.step import learner
    from labcore.machine import configure, pick_device

    dev = pick_device(device)
    configure(dev)
    cfg, train = ModelConfig("cifar_resnet", depth, width, True, "batch"), TrainConfig(optimizer="sgd", lr=0.1)
    x = torch.randn(members, 128, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (members, 128), device=dev)
    # The step that trains runs (labcore.core.step): the model alone (channels-last), or `members` stacked.
    learn = learner([build_model(cfg, (3, 32, 32)).to(dev) for _ in range(members)], train, 10**6, "fp32")
    alive = torch.ones(members, dtype=torch.bool, device=dev)
    parts = [(x[i], y[i]) for i in range(members)]

    def step() -> None:
        learn.step(parts, alive)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(5 + n):
        if i == 5:
            sync()
            start = time.perf_counter()
        step()
    sync()
    return time.perf_counter() - start


def packed(est: Any, tim: Any) -> dict[str, Any]:
    """The plan's compute one run at a time, and packed: with seeds fused as calibrated, or one at a time divided
    by the measured gain of runs sharing the device (fractional), whichever is less."""
    one = est.get("one_at_a_time_s") if isinstance(est, dict) else None
    fused = est.get("fused_s") if isinstance(est, dict) else None
    share = max((v["throughput_gain"]["fractional"] for v in tim.values() if isinstance(v, dict)), default=0) \
        if isinstance(tim, dict) else 0
    options = {"fused seeds (calibrated per architecture)": fused,
               "runs sharing the device (one at a time / the measured fractional gain)": one / share if one and share > 1
               else None}
    options = {k: v for k, v in options.items() if v}
    how = min(options, key=options.get) if options else "one at a time"
    return {"one_at_a_time": one, "packed": options.get(how, one), "packed_how": how}


def check(device: str, out: Path) -> Path:
    """Every part of the check on `device` ('cuda' on the GPU machine; 'cpu' for tiny sizes here); returns the JSON."""
    import torch

    from labcore.core.config import ConfigError

    if device == "cuda" and not torch.cuda.is_available():  # before anything is written
        raise ConfigError("no CUDA GPU here; run `make gpu-check` on the GPU machine, or `make gpu-check DEVICE=cpu` "
                          "for the tiny version")
    tiny = device == "cpu"
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "gpu-check.log", "w", encoding="utf-8")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    work = Path(tempfile.mkdtemp(prefix="labcore-gpu-check-"))
    # Every child (pytest, the build and its kernels, the timings) gets this environment passed explicitly: the
    # bundle's data where it carries some, its wheels where the node lacks the notebook stack.
    env = {**os.environ, **install(work / "site")}
    if (BUNDLE / "data").is_dir():
        env["LABCORE_DATA"] = str(BUNDLE / "data")
    result: dict[str, Any] = {"device": device, "tiny": tiny}
    _part(result, "software", lambda: software(device, env), log)
    _part(result, "tests", lambda: run_tests(out, device, env, tiny), log)
    _part(result, "notebooks", lambda: notebooks(device, tiny, work, env), log)
    _part(result, "estimate", lambda: estimate(device, tiny, work, env), log)
    _part(result, "timing", lambda: timing(device, tiny, env), log)
    result["full_estimate_s"] = packed(result["estimate"], result["timing"])
    path = out / "gpu-check.json"
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    log(f"gpu-check: wrote {path}")
    log_file.close()
    return path
