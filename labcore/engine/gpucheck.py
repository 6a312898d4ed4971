"""The GPU path proven by one prepared command, for a GPU machine that is lent now and then for a few minutes.

    make gpu-bundle              # here: .gpu-bundle/ (git-ignored, < 60 MiB): the wheels that machine lacks, data
    make gpu-check               # there, in one command: writes gpu-check.json and gpu-check.log
    make gpu-check DEVICE=cpu    # here: the same script on tiny sizes (the test suite runs it, so it cannot rot)

That machine reaches no package registry and holds PyTorch, numpy, pandas, matplotlib, seaborn, scikit-learn and
pytest, but not the notebook stack (papermill, nbconvert, ipykernel, ...), W&B or Ray; the bundle carries the
notebook stack as wheels (installed into a temporary folder, not the machine's Python) and subsets of MNIST and
CIFAR-10 as compressed uint8 arrays (labcore's `arrays` data layout; reports built from them say so). The check
runs each part on its own, so one failing part still leaves the others' figures in the JSON.
"""
from __future__ import annotations

import argparse
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

from labcore.files import replacing
from labcore.paths import PROJECT_ROOT

BUNDLE = PROJECT_ROOT / ".gpu-bundle"
BUNDLE_LIMIT = 60 * 2**20  # bytes: what travels to the GPU machine is at most 64 MiB, the code included
# The notebook stack: these and what they need, less what the GPU machine already has (DEVICE_HAS).
NEEDED = ("papermill", "nbconvert", "nbformat", "nbclient", "ipykernel", "jupyter-client")
DEVICE_HAS = {  # python3 there (2026-11, the tool library's KINDS.md), the part that the stack's closure meets
    "aiohttp", "anyio", "attrs", "certifi", "charset-normalizer", "click", "idna", "jinja2", "markupsafe", "numpy",
    "packaging", "pandas", "pillow", "psutil", "pygments", "pyparsing", "python-dateutil", "pyyaml", "requests",
    "six", "tqdm", "typing-extensions", "urllib3", "setuptools", "wheel", "pip", "h11", "httpx", "httpcore",
    "sniffio", "filelock", "fsspec", "matplotlib", "scipy", "scikit-learn", "seaborn", "torch", "torchvision",
    "pytest", "pluggy", "iniconfig", "protobuf", "msgpack", "cloudpickle", "joblib", "threadpoolctl", "tzdata"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATA_SUBSETS = {"mnist": (6000, 1000), "cifar10": (2000, 1000)}  # (train, test) images: enough for the smoke profile


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# The GPU machine's interpreter, for the requirements' environment markers (PEP 508).
DEVICE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                 "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "platform_machine": "x86_64", "extra": ""}


def closure(roots: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, version) of `roots` and everything they require on the GPU machine's Python (no extras), with the
    versions installed here, less what that machine has (DEVICE_HAS)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in DEVICE_HAS:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: the GPU machine needs {name}, which is not installed here; pip install it "
                             "(same version as there) and run `make gpu-bundle` again") from None
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(DEVICE_PYTHON):
                todo.append(req.name)
    return sorted(seen.items())


def bundle(out: Path = BUNDLE, data_root: Path | None = None) -> dict[str, Any]:
    """Write the bundle: wheels of the notebook stack for the GPU machine's Python 3.12, and data subsets."""
    from labcore.core import data

    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wanted = closure(NEEDED)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels),
           *[f"{n}=={v}" for n, v in wanted]]
    subprocess.run(cmd, check=True)
    (out / "data").mkdir(exist_ok=True)
    for name, (n_train, n_test) in DATA_SUBSETS.items():
        raw = data.load_raw(name, data_root)
        import torch

        g = torch.Generator().manual_seed(0)
        tr, te = torch.randperm(len(raw.y_train), generator=g)[:n_train], torch.randperm(len(raw.y_test), generator=g)[:n_test]
        data.save_arrays(data.Raw(raw.x_train[tr], raw.y_train[tr], raw.x_test[te], raw.y_test[te], raw.source),
                         out / "data" / f"{name}.npz", partial=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > BUNDLE_LIMIT:
        raise SystemExit(f"error: {out} holds {size / 2**20:.1f} MiB, over the {BUNDLE_LIMIT / 2**20:.0f} MiB that may "
                         "travel with the code; drop a package or shrink DATA_SUBSETS")
    return {"wheels": len(wanted), "mib": round(size / 2**20, 1), "folder": str(out)}


def _install_bundle(site: Path) -> None:
    """Install the bundle's wheels into `site` (not the machine's Python) when the notebook stack is missing here."""
    try:
        import papermill  # noqa: F401
        return
    except ImportError:
        pass
    wheels = sorted((BUNDLE / "wheels").glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: papermill is not installed and {BUNDLE}/wheels is empty; run `make gpu-bundle` on a "
                         "machine with the package registry, and carry .gpu-bundle")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", str(site), *map(str, wheels)], check=True)
    # Its python3 kernel spec would start `python`, which that machine may lack: without it, jupyter_client starts
    # ipykernel with this very interpreter (its native kernel).
    shutil.rmtree(site / "share" / "jupyter" / "kernels", ignore_errors=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])
    # --target puts nbconvert's templates (and ipykernel's kernel spec) under <site>/share/jupyter, off Jupyter's
    # default search path: without this every page would fail to render for want of its template.
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(site / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")])


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


def software(device: str) -> dict[str, Any]:
    """The GPU (or CPU) and the software that ran the check."""
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
    for name in ("papermill", "nbconvert", "ipykernel", "numpy", "pandas", "matplotlib"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    return info


def run_tests(out: Path, device: str) -> dict[str, Any]:
    """The `gpu`-marked tests (tests/test_gpu.py, tests/test_fused.py) on `device`: passed, failed, skipped."""
    import xml.etree.ElementTree as ET

    xml = out / "gpu-tests.xml"
    env = {**os.environ, "LABCORE_TEST_DEVICE": device}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu and not slow", "tests/test_gpu.py",
                           "tests/test_fused.py", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=", f"--junitxml={xml}"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, failed, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "skipped"))
    errors = int(suite.get("errors", 0))
    return {"passed": n - failed - errors - skipped, "failed": failed + errors, "skipped": skipped,
            "tail": proc.stdout[-1500:]}


def notebooks(device: str, tiny: bool, work: Path) -> dict[str, str]:
    """The smoke profile's notebooks (only 01 when `tiny`) trained and rendered on `device`: status per notebook."""
    env = {**os.environ, "LABCORE_RUNS": str(work / "runs"), "LABCORE_REPORTS": str(work / "reports"),
           "LABCORE_TRACKING": "disabled", "LABCORE_HEADLESS": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every notebook's device "auto" then means the CPU
    cmd = [sys.executable, "-m", "labcore.report.build", "--profile", "smoke", "--executor", "local"]
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


def estimate(device: str, tiny: bool, work: Path) -> dict[str, Any]:
    """The calibration of the full profile's architectures on `device` (quick's 01 when `tiny`), and the plan's
    compute: one run at a time (FUSE=off, the sum of the estimates) and with seeds fused where that pays there."""
    from labcore.engine import plan
    from labcore.store import runs

    before = os.environ.get("LABCORE_CACHE")
    os.environ["LABCORE_CACHE"] = str(work / "cache")  # a fresh calibration, measured here and now
    profile, only = ("quick", ["01_mlp_baseline"]) if tiny else ("full", None)  # tiny: 3 MLP seeds, fused on a CPU
    try:
        d = plan.describe(profile, only, device=device, store=runs.RunStore(work / "empty-store"), fuse="auto")
    finally:  # the project's own cache again (where the timing part records what packs best on this card)
        if before is None:
            os.environ.pop("LABCORE_CACHE")
        else:
            os.environ["LABCORE_CACHE"] = before
    return {"profile": profile, "runs": len(d["planned"]), "one_at_a_time_s": d["alone_seconds"],
            "fused_s": d["pending_seconds"], "fused_runs": sum(n > 1 for n in d["members"].values()),
            "device": d["device"]}


def timing(device: str, tiny: bool) -> dict[str, Any]:
    """He et al.'s ResNet-20 and -56 (width 16, batch 128, CIFAR-sized inputs on the device) for a few hundred
    steps: one run alone; 4 seeds fused into one model (labcore.engine.fused); and 4 runs at once in separate processes
    sharing the device (fractional). Sizes are 2 and a depth-8 width-4 net when `tiny`."""
    out: dict[str, Any] = {}
    steps, runs_at_once = (5, 2) if tiny else (300, 4)
    for depth in ((8,) if tiny else (20, 56)):
        cmd = [sys.executable, "-m", "labcore.engine.gpucheck", "steps", "--device", device, "--depth", str(depth),
               "--steps", str(steps), "--width", "4" if tiny else "16"]
        start = time.perf_counter()
        alone = float(subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.split()[-1])
        fused = float(subprocess.run(cmd + ["--members", str(runs_at_once)], cwd=PROJECT_ROOT, capture_output=True,
                                     text=True, check=True).stdout.split()[-1])
        procs = [subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True) for _ in range(runs_at_once)]
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
    `members` seeds fused into one model when more than 1 (labcore.engine.fused: the whole group's steps)."""
    import torch
    from torch import nn

    from labcore.core.config import ModelConfig, TrainConfig
    from labcore.engine.fused import Fused
    from labcore.machine import configure, pick_device
    from labcore.core.models import build_model
    from labcore.core.train import make_optimizer

    dev = pick_device(device)
    configure(dev)
    cfg, train = ModelConfig("cifar_resnet", depth, width, True, "batch"), TrainConfig(optimizer="sgd", lr=0.1)
    x = torch.randn(members, 128, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (members, 128), device=dev)
    if members > 1:
        group = Fused([build_model(cfg, (3, 32, 32)).to(dev) for _ in range(members)], train, total_steps=10**6)
        alive = torch.ones(members, dtype=torch.bool, device=dev)

        def step() -> None:
            group.step(x, y, alive)
    else:
        model = build_model(cfg, (3, 32, 32)).to(dev).to(memory_format=torch.channels_last)
        opt = make_optimizer(model, train)
        x1 = x[0].contiguous(memory_format=torch.channels_last)

        def step() -> None:
            loss = nn.functional.cross_entropy(model(x1), y[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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
    tiny = device == "cpu"
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "gpu-check.log", "w", encoding="utf-8")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    work = Path(tempfile.mkdtemp(prefix="labcore-gpu-check-"))
    if (BUNDLE / "data").is_dir():
        os.environ["LABCORE_DATA"] = str(BUNDLE / "data")
    _install_bundle(work / "site")
    result: dict[str, Any] = {"device": device, "tiny": tiny}
    _part(result, "software", lambda: software(device), log)
    _part(result, "tests", lambda: run_tests(out, device), log)
    _part(result, "notebooks", lambda: notebooks(device, tiny, work), log)
    _part(result, "estimate", lambda: estimate(device, tiny, work), log)
    _part(result, "timing", lambda: timing(device, tiny), log)
    result["full_estimate_s"] = packed(result["estimate"], result["timing"])
    path = out / "gpu-check.json"
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    log(f"gpu-check: wrote {path}")
    log_file.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """`make gpu-bundle` (bundle), `make gpu-check` (run), and the timing helper (steps)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="write .gpu-bundle/ (needs the package registry and LABCORE_DATA)")
    b.add_argument("--out", type=Path, default=BUNDLE)
    r = sub.add_parser("run", help="run the check and write gpu-check.json")
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    r.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "gpu-check")
    s = sub.add_parser("steps", help="time training steps of a CIFAR ResNet (used by the timing part)")
    s.add_argument("--device", default="cuda")
    s.add_argument("--depth", type=int, default=20)
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--width", type=int, default=16)
    s.add_argument("--members", type=int, default=1, help="seeds fused into one model")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        print(f"gpu-bundle: {bundle(args.out)}")
    elif args.command == "run":
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                print("error: no CUDA GPU here; run `make gpu-check` on the GPU machine, or `make gpu-check DEVICE=cpu` "
                      "for the tiny version", file=sys.stderr)
                return 2
        check(args.device, args.out)
    else:
        print(f"{steps(args.device, args.depth, args.steps, args.width, args.members):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
