"""`make verify`: re-derive stored runs from their configs alone and compare them, number by number and weight by
weight, with what the run store holds.

    python -m labcore verify --profile smoke [--only 01_mlp_baseline] [--sample 1|all] [--seed N]

Each sampled run is trained again from its config in a scratch store (the run store is never written) and
compared with its record: every epoch's metrics, the test metrics and predictions, and the final weights. With the
same device, thread count, PyTorch version and numeric settings a run must repeat bit for bit; otherwise the
tolerances below apply, and the line says why. A file changed after training (an edited number in result.json,
other weights in model.pt) is named from the checksums the store wrote with the run, whatever re-training says.
Every run of the profile is checked that way (cheap); the sample re-derived covers every distinct setting.
A run that does not repeat is flagged in the store (`RunStore.flag`): never served again, retrained by the next build.
"""
from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labcore.text import count, human_seconds, sci
from labcore.core.config import ConfigError, RunConfig
from labcore.store.planned import Planned
from labcore.files import replacing, sha256
from labcore.paths import reports_dir

# Where settings differ (another device, thread count, BLAS or PyTorch, TF32), floating-point sums run in another
# order and training drifts: these bound that drift for the short runs verify picks by default.
TOLERANCE = {"acc": 0.02, "loss": 0.05, "weights": 0.05}  # absolute for accuracies; relative for losses, weights
SKIPPED = ("seconds", "epoch")  # wall time is not a result; the epoch number is the row


def changed_files(folder: Path) -> list[str] | None:
    """Files of a stored run whose bytes differ from the checksums written with it (None: a record from before
    checksums, which only re-training can check)."""
    sums_file = folder / "checksums.json"
    if not sums_file.is_file():
        return None
    sums = json.loads(sums_file.read_text())
    return [name for name, digest in sums.items() if not (folder / name).is_file() or sha256(folder / name) != digest]


def pick(planned: list[Planned], n: int | None, seed: int) -> list[Planned]:
    """`n` runs of every distinct setting among `planned` (a config apart from its seed: its architecture, its
    training and its data settings), drawn with `seed`; every run when `n` is None."""
    from labcore.engine.fused import group_key

    if n is None:
        return list(planned)
    rng, settings = random.Random(seed), {}
    for p in planned:
        settings.setdefault(group_key(p.cfg), []).append(p)
    return [q for members in settings.values() for q in rng.sample(members, min(n, len(members)))]


def check_store(store: Any, planned: list[Planned]) -> tuple[dict[str, str], list[str], str]:
    """Every planned run's state, its files checked against their checksums and its record against its key (what
    serving it checks); (states by key, one line per damaged run, what was checked and how long it took)."""
    start = time.perf_counter()
    states = {p.key: store.state(p.cfg, p.checkpoints) for p in planned}
    damaged = [f"{p.cfg.label()} ({p.key}): {store.damage(p.cfg)}" for p in planned if states[p.key] == "damaged"]
    files = sum(len(list(store.path(p.cfg).rglob("*.pt"))) + 1 for p in planned if states[p.key] != "pending")
    return states, damaged, (f"{count(len(planned), 'run')} checked ({count(files, 'stored file')} against their "
                             f"checksums, every record against its key) in {human_seconds(time.perf_counter() - start)}: "
                             f"{len(damaged)} damaged")


def _largest(a: list[float], b: list[float], relative: bool) -> float:
    """The largest difference between two sequences (relative to the stored value's size when `relative`)."""
    diffs = [abs(x - y) / (max(abs(x), 1e-12) if relative else 1.0) for x, y in zip(a, b)
             if not (math.isnan(x) and math.isnan(y))]
    return max(diffs, default=0.0)


def differences(stored: Any, stored_weights: dict, now: Any, now_weights: dict) -> dict[str, float]:
    """The largest difference per kind of number between a stored run and its re-derivation: accuracies
    (absolute), losses (relative), weights (relative L2 over all tensors), predictions (share that changed)."""
    acc, loss = [], []
    for a, b in zip(stored.history, now.history):
        for key in a:
            if key not in SKIPPED and key in b:
                (acc if key.endswith("acc") else loss if key.endswith("loss") else acc).append((a[key], b[key]))
    if len(stored.history) != len(now.history):
        return {"epochs": float(abs(len(stored.history) - len(now.history)))}
    out = {"acc": _largest([x for x, _ in acc], [y for _, y in acc], False),
           "loss": _largest([x for x, _ in loss], [y for _, y in loss], True)}
    out["acc"] = max(out["acc"], abs(stored.test.get("accuracy", 0) - now.test.get("accuracy", 0)))
    out["loss"] = max(out["loss"], _largest([stored.test.get("loss", 0)], [now.test.get("loss", 0)], True))
    pa, pb = stored.test.get("predictions", []), now.test.get("predictions", [])
    out["predictions"] = sum(x != y for x, y in zip(pa, pb)) / max(len(pa), 1)
    num = sum(float((stored_weights[k].float() - now_weights[k].float()).norm() ** 2) for k in stored_weights)
    den = sum(float(stored_weights[k].float().norm() ** 2) for k in stored_weights)
    out["weights"] = math.sqrt(num / max(den, 1e-30)) if stored_weights.keys() == now_weights.keys() else math.inf
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def recorded_numerics(rec: Any) -> dict[str, Any]:
    """A record's numeric settings; records from before precision was recorded trained in their config's."""
    return {"precision": rec.config.train.precision, **(rec.numerics or {})}


def settings_differ(stored: Any, now: Any) -> list[str]:
    """What differs between the settings a run was trained with and those it was re-derived with."""
    out = [] if stored.device == now.device else [f"device: {stored.device} then, {now.device} now"]
    a, b = recorded_numerics(stored), recorded_numerics(now)
    if not stored.numerics:
        return out + ["its numeric settings were not recorded (a record from before they were)"]
    return out + [f"{k}: {a.get(k)} then, {b.get(k)} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def nondeterministic(rec: Any) -> list[str]:
    """Why a run cannot repeat bit for bit even with the same settings: trained on a GPU without deterministic
    algorithms (default cuDNN picks its kernels by timing, and some of them add in a varying order)."""
    n = rec.numerics or {}
    return [] if n.get("device") != "cuda" or n.get("deterministic") else \
        ["trained on a GPU without DETERMINISTIC=1, so its sums need not repeat in the same order"]


def verdict(diff: dict[str, float], why: list[str]) -> tuple[str, bool]:
    """(line, ok) for one re-derived run: identical, within tolerance (with the reason), or what differs."""
    if all(v == 0 for v in diff.values()):
        return "identical" + (" (bit for bit)" if not why else f" despite {'; '.join(why)}"), True
    if not why:
        worst = max(diff, key=diff.get)
        return f"differs with the same settings: {worst} by {sci(diff[worst], 3)} (expected bit for bit)", False
    over = [k for k in ("acc", "loss", "weights") if diff.get(k, 0) > TOLERANCE[k]] + \
        [k for k in ("epochs",) if k in diff]
    if over:
        return f"differs beyond tolerance: {', '.join(f'{k} by {sci(diff[k], 3)}' for k in over)} ({'; '.join(why)})", False
    return (f"within tolerance (accuracies {sci(diff.get('acc', 0), 2)}, losses {sci(diff.get('loss', 0), 2)}, weights "
            f"{sci(diff.get('weights', 0), 2)}) because {'; '.join(why)}"), True


def representatives(stale: list[Planned], records: dict[str, Any]) -> list[Planned]:
    """The stale runs to re-derive: one per configuration apart from its seed (its architecture, its training and
    its data settings: all a change of code can reach), the lowest seed. A fused record is re-derived fused with its
    seeds, so one training checks every member."""
    from labcore.engine.fused import group_key

    first: dict[str, Planned] = {}
    for p in sorted(stale, key=lambda p: p.cfg.seed):
        first.setdefault(group_key(p.cfg), p)
    return list(first.values())


def keep_stale(store: Any, stale: list[Planned], repeated: dict[str, bool], log=print) -> tuple[int, int]:
    """Keep for today's code the stale runs of every configuration whose representative repeated (`repeated`: key ->
    ok): their numbers stand, their records name today's code and data and say that they were kept, after how many
    re-derivations of how many. Returns (kept, re-derived)."""
    from labcore.engine.fused import group_key

    groups: dict[str, list[Planned]] = {}
    for p in stale:
        groups.setdefault(group_key(p.cfg), []).append(p)
    kept, rederived = 0, len(repeated)
    for members in groups.values():
        if not any(repeated.get(p.key) for p in members):
            log(f"[labcore] verify: {members[0].cfg.label()} and its seeds stay stale (`make train` retrains them)")
            continue
        for p in members:
            store.keep(p.cfg, {"rederived": rederived, "of": len(stale), "why": store.staleness(p.cfg),
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            kept += 1
    return kept, rederived


def rederive(cfg: RunConfig, rec: Any, device: str, checkpoints: Callable[[RunConfig], tuple[int, ...]],
             groups: dict | None = None) -> Any:
    """Train the run again as it was trained: alone, or fused with the same seeds (its record names them), each
    with the checkpoints `checkpoints(cfg)` gives. A fused group is trained once per `groups` (a cache shared by
    the calls of one verification), and serves every sampled member."""
    from labcore.store import runs
    from labcore.engine.fused import group_key
    from labcore.store.training import train_runs

    deterministic = bool((rec.numerics or {}).get("deterministic"))
    precision = recorded_numerics(rec)["precision"]  # as it trained, whatever this machine would pick for "auto"
    if len(rec.fused) <= 1 or cfg.seed not in rec.fused:  # alone (or a record that does not name it: alone)
        return runs.train_run(cfg, device, "disabled", checkpoints(cfg), compile=rec.compiled,
                              deterministic=deterministic, precision=precision)
    groups = {} if groups is None else groups
    key = (group_key(cfg), tuple(rec.fused))
    if key not in groups:
        members = [cfg.replace(seed=s) for s in rec.fused]
        groups[key] = train_runs(members, device, "disabled", [checkpoints(c) for c in members],
                                 deterministic=deterministic, precision=precision)
    return groups[key][list(rec.fused).index(cfg.seed)]


def _check_one(p: Planned, rec: Any, store: Any, scratch: Any, device: str,
               kept: Callable[[RunConfig], tuple[int, ...]], groups: dict) -> tuple[str, bool]:
    """One sampled run: its files against their checksums, then re-derived (as it trained: same thread count,
    fused with its seeds where it was) into `scratch` and compared with the store; (verdict line, repeats)."""
    import torch

    from labcore import machine

    folder = store.path(p.cfg)
    changed = changed_files(folder)
    if changed:
        return f"changed after training: {', '.join(changed)} (its checksum no longer matches)", False
    with machine.threads((rec.numerics or {}).get("threads")):
        again = rederive(p.cfg, rec, device, kept, groups)
    scratch.put(again.result, again.model_state, again.checkpoints)
    weights = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    diff = differences(rec, weights, again.result, again.model_state or {})
    line, ok = verdict(diff, settings_differ(rec, again.result) + nondeterministic(rec))
    return line + (" (a record from before checksums)" if changed is None else ""), ok


def verify(profile: str, only: list[str] | None = None, sample: int | None = 1, device: str = "auto",
           out_root: Path | None = None, log=print, shard: tuple[int, int] = (0, 1),
           studies: list[str] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Check every run of the profile, re-derive a sample and compare it (see the module); writes and returns the
    summary, also saved as reports/<profile>/verify.json for the index. `sample`: runs per distinct setting (None:
    all), drawn anew unless `seed` is given. A run found to differ is flagged in the store: the next build retrains
    it. `shard` (i, n): only every n-th sampled run from the i-th, so that n processes share the work (each writes
    verify-<i>of<n>.json)."""
    from labcore.engine import plan
    from labcore.store import runs

    store = runs.RunStore()
    planned = plan.build_plan(profile, only, studies).runs  # the plan a build of this selection makes
    states, damaged, checked = check_store(store, planned)
    for line in damaged:
        log(f"[labcore] verify: damaged: {line}")
    stored = [p for p in planned if states[p.key] == "stored"]
    stale = [p for p in planned if states[p.key] == "stale" and store.get(p.cfg).ok]
    if not stored and not stale:
        raise ConfigError(f"no run of profile {profile} is stored yet: `make train PROFILE={profile}` first")
    seed = random.SystemRandom().randrange(10**6) if seed is None else seed
    records = {p.key: store.get(p.cfg) for p in stored + stale}
    chosen = (pick(stored, sample, seed) + representatives(stale, records))[shard[0]::shard[1]]
    lines = _rederive_all(chosen, records, stale, store, device, log)
    kept = keep_stale(store, stale, {r["key"]: r["ok"] for r in lines if r["stale"]}, log) if stale else (0, 0)
    ok_count = sum(r["ok"] for r in lines)
    identical = sum(r["verdict"].startswith("identical") for r in lines)
    per = "all" if sample is None else f"{sample} per setting"
    summary = (f"{checked}; {count(len(chosen), 'run')} re-derived ({per}, sample seed {seed}): {identical} identical"
               + (f", {ok_count - identical} within tolerance" if ok_count > identical else "")
               + (f", {len(chosen) - ok_count} differ (flagged: the next build retrains them)"
                  if ok_count < len(chosen) else "")
               + f" ({human_seconds(sum(r['seconds'] for r in lines))})"
               + (f"; {kept[0]} of {len(stale)} stale runs kept for today's code after {kept[1]} re-derived"
                  if stale else ""))
    result = {"profile": profile, "summary": summary, "ok": ok_count == len(chosen) and not damaged, "runs": lines,
              "damaged": damaged, "seed": seed, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "checked": store_state(store, [p.cfg for p in planned])}  # what the verdict is about (changed_since)
    out = (out_root or reports_dir()) / profile / ("verify.json" if shard[1] == 1 else f"verify-{shard[0]}of{shard[1]}.json")
    with replacing(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    log(f"verify {profile}: {summary}; written to {out}")
    return result


def store_state(store: Any, cfgs: list[RunConfig]) -> dict[str, str]:
    """{run key: whether its files are whole, and the SHA-256 of its checksums.json (record, weights, checkpoints)}
    of the runs among `cfgs` that have a result: the store as a verdict found it. A flag, a file edited since, a
    retraining or a removal all change it; what a query can or cannot check of the data does not."""
    sums = {c.key(): (c, store.path(c) / "checksums.json") for c in cfgs}
    return {key: f"{'damaged' if store.damage(c) else 'whole'}:{sha256(f)}" for key, (c, f) in sums.items()
            if f.is_file()}


def changed_since(checked: dict[str, str] | None, store: Any = None) -> int | None:
    """How many of the runs a verdict `checked` (verify.json's) the store now holds otherwise (retrained, kept for
    newer code, flagged, edited, removed); None for a verdict that did not record them (older than this check)."""
    from labcore.store import runs

    if checked is None:
        return None
    store = store or runs.RunStore(query=True)
    now = store_state(store, [c for c in map(store.config_at, checked) if c is not None])
    return sum(now.get(key) != digest for key, digest in checked.items())


def _rederive_all(chosen: list[Planned], records: dict, stale: list[Planned], store: Any, device: str,
                  log) -> list[dict]:
    """Re-derive each chosen run in a scratch store and compare; a stored run that differs is flagged in `store`."""
    from labcore.store import runs

    lines, groups = [], {}  # fused groups re-derived so far (one training serves every sampled member)

    def kept(cfg: RunConfig) -> tuple[int, ...]:
        return tuple(sorted(store.checkpoint_epochs(cfg)))

    with tempfile.TemporaryDirectory(prefix="labcore-verify-") as scratch:
        scratch_store = runs.RunStore(scratch, memo=Path(scratch) / "verified.json")  # its memo goes with it
        for p in chosen:
            start = time.perf_counter()
            line, ok = _check_one(p, records[p.key], store, scratch_store, device, kept, groups)
            lines.append({"run": p.cfg.label(), "key": p.key, "ok": ok, "verdict": line, "stale": p in stale,
                          "seconds": time.perf_counter() - start})
            log(f"[labcore] verify {p.cfg.label()} ({p.key}){' (stale)' if p in stale else ''}: {line}")
            if not ok and p not in stale:
                store.flag(p.cfg, f"make verify re-derived it and it differs: {line}")
    return lines
