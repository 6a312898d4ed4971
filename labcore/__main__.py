"""One command line: `python -m labcore <verb> [options]` (the Makefile's targets call it); `--help` after a verb
lists its options.

    python -m labcore plan --profile quick
    python -m labcore report --profile smoke --only 01_mlp_baseline
"""
from __future__ import annotations

import importlib
import sys

# verb -> (module whose main() it runs, arguments put first, what it does)
VERBS = {
    "plan": ("labcore.engine.plan", (), "print what a profile would train and what it costs here (trains nothing)"),
    "train": ("labcore.engine.executor", (), "train every pending or stale run of a profile's plan"),
    "report": ("labcore.report.build", (), "train what the notebooks need, then build the pages that changed"),
    "verify": ("labcore.report.verify", (), "re-derive stored and stale runs and compare them with the store"),
    "diff": ("labcore.report.diff", (), "compare two builds of one profile number by number"),
    "check-report": ("labcore.report.browse", (), "open the built pages in headless Chromium: checks, screenshots"),
    "gpu-check": ("labcore.engine.gpucheck", ("run",), "prove the GPU path in one command"),
    "bundle": ("labcore.engine.gpucheck", ("bundle",), "write the wheels and data an offline GPU node lacks"),
    "check-clean": ("labcore.store.tracking", ("--check-clean",), "refuse while W&B offline runs are unsynced"),
}


def usage() -> str:
    """The verbs, one line each."""
    width = max(map(len, VERBS))
    return "usage: python -m labcore <verb> [options]  (<verb> --help for its options)\n\n" + "\n".join(
        f"  {verb:<{width}}  {what}" for verb, (_, _, what) in VERBS.items())


def main(argv: list[str] | None = None) -> int:
    """Run one verb's command with the remaining arguments; its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in VERBS:
        print(f"error: unknown verb {argv[0]!r}; choose one of: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    module, first, _ = VERBS[argv[0]]
    return importlib.import_module(module).main([*first, *argv[1:]]) or 0


if __name__ == "__main__":
    sys.exit(main())
