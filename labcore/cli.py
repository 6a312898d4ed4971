"""One command line: `labcore <verb> [options]` (or `python -m labcore`), e.g. `labcore plan --profile quick`; the
Makefile's targets call it, and `<verb> --help` lists a verb's options.

Every verb parses its arguments here and calls one function of the layer that does the work; bad input (a
profile, a notebook, a data root, a setting) is one line on stderr and exit status 2, before anything is trained
or written. Heavy modules (PyTorch) are imported only by the verb that needs them, so `--help` answers at once.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import labcore

PROFILE_HELP = ("smoke, quick, lab (the lab notebook's own runs at its settings) or full (default: full with a "
                "CUDA GPU or a Ray cluster, quick otherwise)")
ONLY_HELP = "comma-separated notebook stems, e.g. 01_mlp_baseline (default: every notebook)"
FUSE_CHOICES = ("auto", "on", "off")  # labcore.engine.jobs.FUSE_MODES (checked equal by tests/test_cli.py)
STUDIES_HELP = "comma-separated studies, e.g. lab_cnn,lab_resnet: only their runs and sections (default: all)"


# ---------------------------------------------------------------- shared options

def _selection(p: argparse.ArgumentParser) -> None:
    """--profile and --only, which most verbs take."""
    p.add_argument("--profile", default="", help=PROFILE_HELP)
    p.add_argument("--only", default="", help=ONLY_HELP)
    p.add_argument("--studies", default="", help=STUDIES_HELP)


def _training(p: argparse.ArgumentParser) -> None:
    """How runs not stored yet are trained (make train, and make report before its notebooks)."""
    p.add_argument("--executor", default="", help="local (this process) or ray (default: ray for a cluster, or where "
                   "this machine trains several runs at once and 10 minutes or more are pending; else local)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                   help="a Ray cluster's address (default: $RAY_ADDRESS; none: an embedded local Ray)")
    p.add_argument("--cpus-per-run", type=int, default=None, help="CPU threads per run with Ray (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs per run with Ray (default: 1 where the cluster has GPUs); 0.25 lets 4 runs share one")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms, no cuDNN benchmark, no "
                   "TF32: runs repeat bit for bit on the same device and software, more slowly on a GPU")
    p.add_argument("--fuse", default="auto", choices=FUSE_CHOICES, help="train a config's seeds as one batched "
                   "model: auto (where measured to pay: the MLPs on a CPU, everything on a GPU), on, off")


def _again(command: str, args: argparse.Namespace) -> str:
    """The make command that repeats this one's selection (`make report PROFILE=smoke ONLY=01_mlp_baseline`)."""
    return " ".join([command] + [f"{var}={getattr(args, key)}" for var, key in
                                 (("PROFILE", "profile"), ("ONLY", "only"), ("STUDIES", "studies"))
                                 if getattr(args, key, "")])


def _profile(given: str, only_text: str) -> tuple[str, list[str] | None]:
    """The profile (picked and said on the first line when none is given) and the checked notebook selection."""
    from labcore.engine.plan import check_selection, choose_profile
    from labcore.exercises.params import parse_only

    profile, first = choose_profile(given)
    only = parse_only(only_text)
    check_selection(profile, only)
    if first:
        print(first, flush=True)
    return profile, only


# ---------------------------------------------------------------- the verbs

def plan(args: argparse.Namespace) -> int:
    """Print what a profile would train and what it costs here (with --json, the build's plan itself)."""
    from labcore.engine.calibrate import check_device
    from labcore.engine.plan import build_plan, describe, other_cost, plan_json, print_plan
    from labcore.exercises.params import parse_list
    from labcore.store.runs import RunStore

    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # --json: the plan alone on stdout
        profile, only = _profile(args.profile, args.only)
        built = build_plan(profile, only, parse_list(args.studies))  # the plan `make report` makes and writes
    if args.json:
        print(json.dumps(plan_json(built, RunStore(query=True)), indent=1))
        return 0
    calibrate = False if args.no_calibrate else True if args.exact else "coarse"
    d = describe(built, check_device(args.device), calibrate=calibrate, fuse=args.fuse, store=RunStore(query=True))
    try:
        print_plan(d)
        if not args.profile:
            print(other_cost(profile, args.device))
        print(f"run store: {d['store'].root.parent}")
        sys.stdout.flush()  # a closed pipe fails here rather than at exit
    except BrokenPipeError:  # `make plan | head`: the reader has what it wanted; no traceback, no error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def train(args: argparse.Namespace) -> int:
    """Train every pending or stale run of a profile's plan; 1 when some failed or were lost."""
    from labcore.engine.executor import train as train_plan
    from labcore.engine.plan import build_plan
    from labcore.exercises.params import parse_list
    from labcore.machine import deterministic_process
    from labcore.store.tracking import check_mode
    from labcore.text import count, human_seconds

    if args.deterministic:
        deterministic_process()
    check_mode(args.tracking, "--tracking")
    profile, only = _profile(args.profile, args.only)
    out = train_plan(build_plan(profile, only, parse_list(args.studies)), args.executor, args.address,
                     tracking=args.tracking, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                     cpus=args.cpus, retry_failed=args.retry_failed, deterministic=args.deterministic, fuse=args.fuse)
    again = _again("make train", args)
    after = ([f"{len(out.failed)} failed (stored as failed: `{again} RETRY_FAILED=1` trains them again)"]
             if out.failed else []) + ([f"{len(out.lost)} lost (still pending: `{again}` tries them again)"]
                                       if out.lost else [])
    print(f"[labcore] trained {count(len(out.trained), 'run')} in {human_seconds(out.seconds)}"
          + (f"; {'; '.join(after)}" if after else "; none failed or lost"), flush=True)
    return 0 if not out.failed and not out.lost else 1


def report(args: argparse.Namespace) -> int:
    """Train what the notebooks need, then build the pages whose inputs changed; 1 when a notebook failed."""
    from labcore.exercises.params import parse_list
    from labcore.machine import deterministic_process
    from labcore.report.build import build

    if args.deterministic:
        deterministic_process()
    profile, only = _profile(args.profile, args.only)
    records = build(profile, only, args.out, args.executor, args.address, args.cpus_per_run, args.gpus_per_run,
                    args.deterministic, args.fuse, args.force, parse_list(args.studies))
    return 0 if all(r["status"] == "ok" for r in records) else 1


def verify(args: argparse.Namespace) -> int:
    """Re-derive stored and stale runs; 1 when one does not repeat."""
    from labcore.core.config import ConfigError
    from labcore.engine.calibrate import check_device
    from labcore.exercises.params import parse_list
    from labcore.report.verify import verify as verify_runs

    if args.sample != "all" and not args.sample.isdigit():
        raise ConfigError(f"--sample {args.sample!r}: give a number of runs per distinct setting, or all")
    i, n = _shard(args.shard)
    profile, only = _profile(args.profile, args.only)
    result = verify_runs(profile, only, None if args.sample == "all" else int(args.sample), check_device(args.device),
                         shard=(i, n), studies=parse_list(args.studies), seed=args.seed)
    return 0 if result["ok"] else 1


def _shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), refused in one line unless 0 <= i < n."""
    from labcore.core.config import ConfigError

    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: give i/n, e.g. 0/2 for the first of two processes") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: i must be at least 0 and below n")
    return i, n


def diff(args: argparse.Namespace) -> int:
    """Compare two builds; 0 when they agree."""
    from labcore.core.config import ConfigError
    from labcore.report.diff import write

    if not args.a.strip() or not args.b.strip():
        raise ConfigError("make diff needs two builds of one profile: make diff A=reports/smoke B=<other>/reports/smoke")
    out, lines, line, same = write(Path(args.a), Path(args.b), args.out)
    for text in lines:
        print(text)
    print(f"diff: {line}; {out}")
    return 0 if same else 1


def lab(args: argparse.Namespace) -> int:
    """JupyterLab on the project, on loopback, with a token made here and printed in the URL to open."""
    import importlib.util

    from labcore.core.config import ConfigError
    from labcore.paths import PROJECT_ROOT

    if importlib.util.find_spec("jupyterlab") is None:
        raise ConfigError("JupyterLab is not installed in this Python; `make venv` installs it (pyproject.toml)")
    with socket.socket() as probe:  # before the URL is printed: a port in use would point it at another server
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            raise ConfigError(f"port {args.port} is in use (another JupyterLab?); open that one, or start this one on "
                              f"another port: make lab LAB_PORT={args.port + 1}")
    token = secrets.token_hex(24)
    print(f"[labcore] JupyterLab: open http://localhost:{args.port}/lab/tree/notebooks?token={token}", flush=True)
    print('[labcore] set a notebook\'s profile to one you built ("smoke" after make report PROFILE=smoke, "quick" after '
          'make train PROFILE=quick) to see its real results', flush=True)
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={PROJECT_ROOT}",
           "--LabApp.default_url=/lab/tree/notebooks", f"--port={args.port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", "--LabApp.news_url=None"]  # no "get Jupyter's news?" popup over the outputs
    if os.geteuid() == 0:  # Jupyter refuses root without --allow-root; a root container rarely has a browser
        cmd += ["--allow-root", "--no-browser"]
    # The token travels in the environment, not on the command line, where other users could read it in `ps`.
    os.execve(cmd[0], cmd, {**os.environ, "JUPYTER_TOKEN": token})
    return 0  # not reached: the lab replaces this process


def check_report(args: argparse.Namespace) -> int:
    """Open the built pages in headless Chromium; 1 when a page has a problem."""
    from labcore.paths import reports_dir
    from labcore.report.browse import check_reports
    from labcore.text import count

    profile, _ = _profile(args.profile, "")
    checks = check_reports((args.out or reports_dir()) / profile, profile)
    for c in checks:
        print(f"{c.page}: {'ok' if not c.problems else count(len(c.problems), 'problem')}; screenshot {c.screenshot}")
        for p in c.problems:
            print(f"  - {p}")
    return 0 if not any(c.problems for c in checks) else 1


def pdf(args: argparse.Namespace) -> int:
    """Print the built pages to A4 PDFs, one per page and one for the build; 1 when something did not fit."""
    from labcore.paths import reports_dir
    from labcore.report.pdf import write_pdfs
    from labcore.text import count

    profile, _ = _profile(args.profile, "")
    parts, whole = write_pdfs((args.out or reports_dir()) / profile, profile)
    for part in parts:
        extra = f", {count(part.folds, 'folded code block')} in its appendix" if part.folds else ""
        scaled = f", {count(len(part.scaled), 'wide table')} scaled to the page" if part.scaled else ""
        print(f"{part.pdf}: {count(part.sheets, 'page')}{extra}{scaled}")
        for problem in part.problems:
            print(f"  - {problem}")
    print(f"pdf: {whole} ({sum(p.sheets for p in parts)} pages, {whole.stat().st_size / 2**20:.1f} MiB)")
    return 0 if not any(p.problems for p in parts) else 1


def gpu_check(args: argparse.Namespace) -> int:
    """The GPU path's self-test; writes gpu-check.json."""
    from labcore.engine.gpucheck import check

    check(args.device, args.out)
    return 0


def bundle(args: argparse.Namespace) -> int:
    """Wheels and data subsets for an offline GPU node that already has PyTorch."""
    from labcore.engine.bundle import bundle as write_bundle, read_node

    print(f"bundle: {write_bundle(read_node(args.have, args.python), args.out)}")
    return 0


def check_clean(args: argparse.Namespace) -> int:
    """Refuse (1) while W&B offline runs were never synced; `make clean` asks first."""
    from labcore.store.tracking import unsynced_message

    message = unsynced_message()
    if message:
        print(message, file=sys.stderr)
    return 1 if message else 0


# ---------------------------------------------------------------- the parser

def _options_plan(p: argparse.ArgumentParser) -> None:
    _selection(p)
    p.add_argument("--device", default="auto", help="device to estimate for: cpu, cuda, ... (default: auto)")
    p.add_argument("--no-calibrate", action="store_true", help="skip the step timing (counts only)")
    p.add_argument("--fuse", default="auto", choices=FUSE_CHOICES,
                   help="as `make train` will: auto, on or off (labcore.engine.fused)")
    p.add_argument("--exact", action="store_true", help="time every architecture now, not from FLOPs (minutes: full)")
    p.add_argument("--json", action="store_true", help="print the build's plan.json, each run with its state")


def _options_train(p: argparse.ArgumentParser) -> None:
    _selection(p)
    _training(p)
    p.add_argument("--cpus", type=int, default=None, help="CPUs an embedded Ray may use (default: all)")
    p.add_argument("--retry-failed", action="store_true", help="train runs stored as failed again")
    p.add_argument("--tracking", default=os.environ.get("LABCORE_TRACKING") or "offline",
                   help="W&B mode for the runs: offline, online or disabled")


def _options_report(p: argparse.ArgumentParser) -> None:
    _selection(p)
    _training(p)
    p.add_argument("--out", type=Path, default=None, help="reports folder (default: $LABCORE_REPORTS or reports/)")
    p.add_argument("--force", action="store_true", help="execute every notebook, even those whose page's inputs are "
                   "unchanged since the last build")


def _options_verify(p: argparse.ArgumentParser) -> None:
    _selection(p)
    p.add_argument("--sample", default="1", help="runs per distinct setting (architecture, training, data), or 'all'")
    p.add_argument("--seed", type=int, default=None, help="draw the sample with this seed (default: anew each time)")
    p.add_argument("--device", default="auto", help="where to re-derive: auto, cpu, cuda, ...")
    p.add_argument("--shard", default="0/1", help="i/n: the i-th of n processes sharing the sample")


def _options_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="a built profile's folder, e.g. reports/smoke")
    p.add_argument("b", help="another build of the same profile")
    p.add_argument("--out", type=Path, default=None, help="the page (default: reports/diff-<a>-<b>.html)")


def _options_lab(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8888, help="loopback port (default 8888; taken: an error, no retry)")


def _options_built(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="", help=f"the built profile: {PROFILE_HELP}")
    p.add_argument("--out", type=Path, default=None, help="reports folder (default: $LABCORE_REPORTS or reports/)")


def _options_gpu_check(p: argparse.ArgumentParser) -> None:
    from labcore.paths import PROJECT_ROOT

    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda on the GPU node; cpu: tiny sizes")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "gpu-check", help="where the JSON and log go")


def _options_bundle(p: argparse.ArgumentParser) -> None:
    from labcore.engine.bundle import BUNDLE, LENT_NODE

    p.add_argument("--have", type=Path, default=LENT_NODE, help="its pip freeze (default: the H200's, engine/nodes/)")
    p.add_argument("--python", default=None, help="the node's Python version, e.g. 3.12.3 (default: from --have)")
    p.add_argument("--out", type=Path, default=BUNDLE, help="the bundle's folder (default: .gpu-bundle/)")


# verb -> (what it does, its options, its handler, what to run again after Ctrl-C)
VERBS: dict[str, tuple[str, Callable, Callable, str]] = {
    "plan": ("print what a profile would train and what it costs here (trains nothing)", _options_plan, plan, ""),
    "train": ("train every pending or stale run of a profile's plan", _options_train, train, "make train"),
    "report": ("train what the notebooks need, then build the changed pages", _options_report, report, "make report"),
    "verify": ("re-derive stored and stale runs and compare them with the store", _options_verify, verify, ""),
    "diff": ("compare two builds of one profile number by number", _options_diff, diff, ""),
    "lab": ("JupyterLab on the project, on loopback, printing the URL to open", _options_lab, lab, ""),
    "check-report": ("check the built pages in headless Chromium; screenshots", _options_built, check_report, ""),
    "pdf": ("print the built pages to A4 PDFs: one per page, and the whole build index first", _options_built, pdf, ""),
    "gpu-check": ("prove the GPU path in one command (DEVICE=cpu: tiny sizes here)", _options_gpu_check, gpu_check, ""),
    "bundle": ("write the wheels and data an offline GPU node lacks", _options_bundle, bundle, ""),
    "check-clean": ("refuse while W&B offline runs are unsynced (make clean asks)", lambda p: None, check_clean, ""),
}


def parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per verb, each with its --help."""
    top = argparse.ArgumentParser(prog="labcore", description=__doc__.split("\n\n")[0])
    top.add_argument("--version", action="version", version=f"labcore {labcore.__version__}")
    sub = top.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb, (what, options, handler, _) in VERBS.items():
        p = sub.add_parser(verb, help=what, description=what[0].upper() + what[1:] + ".")
        options(p)
        p.set_defaults(handler=handler)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one verb; its exit status (2 for bad input, named in one line; 130 after Ctrl-C)."""
    args = parser().parse_args(argv)  # --help and bad options end here, before PyTorch is imported
    again = VERBS[args.verb][3]
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\n[labcore] interrupted" + (f": finished runs are stored; `{_again(again, args)}` does only the rest"
                                           if again else ""), file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted below; what is not bad input or the machine's is re-raised
        return _failed(exc)


def _failed(exc: Exception) -> int:
    """Bad input and the machine's refusals as one line (exit 2, or `refused`'s); anything else is a bug: raised."""
    if isinstance(exc, ModuleNotFoundError) and not (exc.name or "labcore").startswith("labcore"):  # first: no torch
        fix = ("`make venv` installs what pyproject.toml lists" if Path(sys.prefix).name == ".venv" else
               "run labcore with the project's: .venv/bin/python -m labcore ... (or make <target>; `make venv` creates it)")
        print(f"error: this Python ({sys.executable}) lacks {exc.name}; {fix}", file=sys.stderr)
        return 2
    from labcore.core.config import ConfigError
    from labcore.core.data import DataNotFoundError
    from labcore.faults import RunLost, advice, refused

    if isinstance(exc, (ConfigError, DataNotFoundError)):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, RunLost):
        print(f"error: {exc}; {advice(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):  # the machine refused a write: one line naming the path, never a traceback
        return refused(exc)
    raise exc
