"""The rules behind every sentence a report states about its numbers, with the spread over seeds taken into account.

- An order between two models (A > B) is stated only when a two-sided Welch t-test over their seeds rejects
  equal means at LEVEL; otherwise they are "not distinguishable with N seeds". With one seed per model no test
  is possible, and no order is stated without saying so.
- A measurement "agrees" with the lab's value only when the lab's value lies inside our confidence interval
  (widened by the tolerance the lab's rounding allows) *and* that interval is narrow enough to tell (half-width
  at most the tolerance); a wide interval is "inconclusive", never "agrees"; a lab value outside it "disagrees".
  One seed gives no interval: "inconclusive", unless the value misses the lab's by more than three tolerances.
- A seed "trained" when its final validation accuracy is above chance beyond sampling noise: more than 1.645
  binomial standard errors (a one-sided 95 % bound, Z_ONE_SIDED) above the best constant guess on the validation
  images it was measured on (always answering their most frequent class: 10 % on CIFAR-10's balanced classes, but
  13.4 % on smoke's 500 images, where a network that answers "truck" to everything must not count as trained).

Every rule is pinned by tests on synthetic numbers at its boundaries (tests/test_claims.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from labcore.text import count, sci

LEVEL = 0.95  # confidence of every test and interval here (two-sided)
Z_ONE_SIDED = 1.645  # 95 % one-sided normal quantile, for the chance-level bound


def _clean(values: Sequence[float]) -> np.ndarray:
    """Finite values only: a failed (NaN) seed is reported by trainability, not averaged or tested."""
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


@dataclass(frozen=True)
class Comparison:
    """A against B on one metric: means, seeds, the Welch test's p-value, and what may be said."""

    a: str
    b: str
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    p: float | None  # None when a test is impossible (fewer than two seeds on a side)
    verdict: str  # "greater", "less", "indistinguishable" or "one seed"

    @property
    def seeds(self) -> str:
        return count(self.n_a, "seed") if self.n_a == self.n_b else f"{self.n_a} and {self.n_b} seeds"


def compare(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
            level: float = LEVEL) -> Comparison:
    """Welch's two-sided t-test of mean(a) against mean(b) (unequal variances)."""
    x, y = _clean(a), _clean(b)
    ma, mb = (float(x.mean()) if x.size else math.nan), (float(y.mean()) if y.size else math.nan)
    if x.size < 2 or y.size < 2:
        return Comparison(name_a, name_b, ma, mb, x.size, y.size, None, "one seed")
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a side whose seeds all agree (all at chance, say): no spread to test against
        return Comparison(name_a, name_b, ma, mb, x.size, y.size, None, "indistinguishable")
    p = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
    verdict = "indistinguishable" if not p < 1 - level else ("greater" if ma > mb else "less")
    return Comparison(name_a, name_b, ma, mb, x.size, y.size, p, verdict)


def order(groups: Mapping[str, Sequence[float]], higher_is_better: bool = True) -> tuple[str, list[Comparison]]:
    """Names best first, joined by '>' where the neighbours differ at LEVEL, '≈' where they cannot be told
    apart, and ',' where a single seed leaves it untested; also the neighbouring comparisons."""
    ranked = sorted(groups, key=lambda k: _clean(groups[k]).mean() if _clean(groups[k]).size else -math.inf,
                    reverse=higher_is_better)
    if not higher_is_better:  # NaN means (no finite seed) go last either way
        ranked = sorted(ranked, key=lambda k: not _clean(groups[k]).size)
    chain, pairs = [ranked[0]] if ranked else [], []
    for a, b in zip(ranked, ranked[1:]):
        c = compare(groups[a], groups[b], a, b)
        pairs.append(c)
        chain.append({"greater": " > ", "less": " > ", "indistinguishable": " ≈ ", "one seed": ", "}[c.verdict] + b)
    return "".join(chain), pairs


def same_within_noise(mean_a: float, std_a: float | None, n_a: int | None, mean_b: float, std_b: float | None,
                      n_b: int | None) -> str:
    """Two builds' means of one metric over seeds, from their summaries: 'identical', 'within seed noise' (a Welch
    t-test does not separate them at LEVEL), 'differs', or 'one seed: cannot tell' (no spread to test against)."""
    if mean_a == mean_b or (_nan(mean_a) and _nan(mean_b)):
        return "identical"
    if _nan(mean_a) or _nan(mean_b):
        return "differs"
    if not (n_a and n_b and n_a >= 2 and n_b >= 2) or _nan(std_a) or _nan(std_b):
        return "one seed: cannot tell"
    if std_a == 0 and std_b == 0:
        return "differs"
    p = stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue
    return "within seed noise" if p >= 1 - LEVEL else "differs"


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def order_words(chain: str) -> str:
    """An order from `order` ('A > B ≈ C') in words: 'A ahead of B; B and C not distinguishable', for headlines that
    must read without a legend; with a single seed ('A, B'), only the means' order, saying that nothing is claimed."""
    words, parts = [], [p for p in chain.replace(" > ", "\x00>\x00").replace(" ≈ ", "\x00≈\x00")
                         .replace(", ", "\x00,\x00").split("\x00")]
    if "," in parts[1::2]:  # a single seed somewhere: no test, so only the means' order is given
        return f"{', '.join(parts[0::2])}, in the order of their means (one seed: no order is claimed)"
    for a, sep, b in zip(parts[0::2], parts[1::2], parts[2::2]):
        words.append({">": f"{a} ahead of {b}", "≈": f"{a} and {b} not distinguishable",
                      ",": f"{a} and {b} untested (one seed)"}[sep])
    return "; ".join(words) or chain


def order_sentence(groups: Mapping[str, Sequence[float]], measure: str, higher_is_better: bool = True,
                   explain: bool = True) -> str:
    """One sentence stating the order that `measure` supports, and no more; without `explain` (a sentence before
    said what '>' and '≈' mean), only which way is better."""
    chain, pairs = order(groups, higher_is_better)
    if not pairs:
        return f"Only {chain or 'nothing'} was measured by {measure}; there is no order to state."
    n = sorted({p.n_a for p in pairs} | {p.n_b for p in pairs})
    seeds = f"{count(n[0], 'seed')} each" if len(n) == 1 else f"{n[0]} to {n[-1]} seeds"
    if all(p.verdict == "one seed" for p in pairs):
        if _single_seeds(groups):
            return (f"By {measure}, the single runs come in the order {chain}; with one seed per model the spread "
                    f"between runs is unknown, so this is not an order that can be claimed.")
        return (f"By {measure}, the means come in the order {chain}; a single seed in each neighbouring pair leaves "
                f"every step untested, so this is not an order that can be claimed.")
    better = "higher" if higher_is_better else "lower"
    if not explain:
        return f"By {measure}: **{chain}** ({better} is better)."
    note = (f"'>': better ({better}), and a Welch t-test over seeds separates the neighbours at the 95 % level; "
            f"'≈': not distinguishable with {seeds}") + ("; ',' that one of them has a single seed" if
                                                 any(p.verdict == "one seed" for p in pairs) else "")
    return f"By {measure}: **{chain}** ({note})."


def _single_seeds(groups: Mapping[str, Sequence[float]]) -> bool:
    """Whether every group has at most one finite value (one seed, or none that trained)."""
    return all(_clean(v).size <= 1 for v in groups.values())


def orders_sentence(measures: Sequence[tuple[Mapping[str, Sequence[float]], str, bool]]) -> str:
    """`order_sentence` for each (groups, measure, higher is better) in turn; where every model has a single seed,
    one sentence that gives the single runs' orders and says once that none of them can be claimed."""
    if not measures or not all(len(groups) > 1 and _single_seeds(groups) for groups, _, _ in measures):
        return " ".join(order_sentence(groups, measure, higher, explain=i == 0)
                        for i, (groups, measure, higher) in enumerate(measures))
    chains = [f"{order(groups, higher)[0]} by {measure}" for groups, measure, higher in measures]
    return ("With one seed per model the spread between runs is unknown, so no order can be claimed; the single runs "
            f"come in the order {', and '.join(chains) if len(chains) < 3 else '; '.join(chains)}.")


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and the two-sided t confidence interval of the mean (NaN bounds with fewer than two seeds)."""
    v = _clean(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def agreement(values: Sequence[float], lab: float, tolerance: float, log: bool = False,
              comparable: bool = True) -> str:
    """'agrees', 'disagrees', 'inconclusive' or 'not comparable' (settings that differ from the lab's).

    `tolerance` is how far from the lab's value still counts as the same number (its rounding and the lab's
    own run-to-run noise); with `log`, values are compared as ratios: a tolerance of log(2) is a factor of 2."""
    if not comparable:
        return "not comparable"
    v = _clean(values)
    if log:
        v, lab = np.log(v[v > 0]), math.log(lab)
    mean, lo, hi = interval(v)
    if not math.isfinite(mean):
        return "inconclusive"
    if not math.isfinite(lo):  # one seed: without a spread only a clear miss can be called
        return "disagrees" if abs(mean - lab) > 3 * tolerance else "inconclusive"
    if lab < lo - tolerance or lab > hi + tolerance:
        return "disagrees"
    return "agrees" if (hi - lo) / 2 <= tolerance else "inconclusive"


def chance_bound(n_val: int, guess: float) -> float:
    """The validation accuracy a model that guesses exceeds with only 5 % probability: `guess`, the accuracy of the
    best constant answer on those `n_val` images (their most frequent class's share), + 1.645 standard errors
    (normal approximation to the binomial)."""
    assert 0 < guess <= 1, f"guess is an accuracy between 0 and 1, got {guess}"  # 1: one class only, none beats it
    return guess + Z_ONE_SIDED * math.sqrt(guess * (1 - guess) / max(n_val, 1))


def seed_trained(val_acc: float, n_val: int, guess: float) -> bool | None:
    """Did this seed learn anything? None for a failed run (NaN), else whether it beats chance_bound."""
    if not math.isfinite(val_acc):
        return None
    return val_acc > chance_bound(n_val, guess)


def seeds_phrase(flags: Sequence[bool | None], seeds: Sequence[int]) -> str:
    """'trained in 2 of 3 seeds (seed 1 failed)' from per-seed seed_trained results."""
    ok = sum(f is True for f in flags)
    failed = [str(s) for f, s in zip(flags, seeds) if f is None]
    out = f"trained in {ok} of {len(flags)} seed{'s' if len(flags) != 1 else ''}"
    return out + (f" (seed {', '.join(failed)} failed)" if failed else "")


def failures(results: Sequence[Any]) -> list[str]:
    """One line per failed run, naming it and its error."""
    return [f"{r.config.label()} ({r.key}): {r.error}" for r in results if not r.ok]


def failure_note(results: Sequence[Any]) -> str:
    """The sentence a notebook shows under its runs: how many failed, of how many, and which with what error."""
    failed = failures(results)
    if not failed:
        return f"Failed runs: none of {len(results)}."
    return (f"**Failed runs: {len(failed)} of {len(results)}** (kept in the run store with their partial "
            "histories; a table row that includes one shows NaN, not a mean over the other seeds): "
            + "; ".join(failed) + ".")


_READING = {"agrees": "agrees with", "disagrees": "disagrees with", "inconclusive": "can neither confirm nor refute",
            "not comparable": "is not comparable with"}


def agreement_sentence(table: pd.DataFrame) -> str:
    """A one-paragraph reading of a `compare` table, for the report's markdown."""
    if table.empty:
        return "No measurement to compare with the lab's numbers."
    parts = []
    for _, r in table.iterrows():
        why = {"inconclusive": " (the interval over seeds is too wide, or there is one seed)",
               "not comparable": " (different settings)"}.get(r["verdict"], "")
        if r["verdict"] == "disagrees":
            why = f" (ours is {r['difference']:+.3g} from it)"
        parts.append(f"{r['metric']} {r['measured (mean)']:.3f} ({r['95% interval']}) {_READING[r['verdict']]} "
                     f"{r['claim']}{why}")
    reason = table.attrs.get("reason") if (table["verdict"] == "disagrees").any() else None
    return "; ".join(parts) + "." + (f" Likeliest reason for the difference: {reason}." if reason else "")


def vgg_claims(df: pd.DataFrame, orders: bool = True) -> str:
    """Which of the lab's two VGG orderings (VGG19 > VGG16, or VGG16 > VGG19; VGG24 last in both) the runs
    support, tested over seeds on validation accuracy and on final training loss (a runs table of the VGG study).
    With one seed each nothing can be tested: the VGGs' orders as measured (not where `orders` is False: the caller
    gave them already), and why no claim follows."""
    vgg = df[df["family"] == "vgg"]
    by_depth = {d: g for d, g in vgg.groupby("depth")}
    if not {16, 19} <= set(by_depth):
        return "VGG16 and VGG19 were not both trained, so the lab's claims cannot be checked."
    measures = [({f"VGG{d}": list(g[metric]) for d, g in sorted(by_depth.items())}, label, higher)
                for metric, higher, label in (("val_acc", True, "validation accuracy"),
                                              ("train_loss", False, "final training loss"))]
    if all(_single_seeds(groups) for groups, _, _ in measures):  # nothing to test: the orders, if asked, and why
        return ((orders_sentence(measures) + " ") if orders else "") + ("Neither write-up's order of VGG16 and VGG19, "
                                                                      "nor VGG24 last, can be tested without a second seed.")
    out = []
    for i, (groups, label, higher) in enumerate(measures):  # '>' and '≈' explained once (by the caller, without `orders`)
        out.append(order_sentence(groups, label, higher, explain=orders and i == 0))
        c = compare(groups["VGG19"], groups["VGG16"], "VGG19", "VGG16")
        better = {"greater": "VGG19", "less": "VGG16"}.get(c.verdict) if higher else \
            {"less": "VGG19", "greater": "VGG16"}.get(c.verdict)
        if better == "VGG19":
            out.append(f"By {label}, VGG19 beats VGG16: the ranking write-up's order (ResNet34 > ResNet18 > VGG19 > "
                       "VGG16 > VGG24).")
        elif better == "VGG16":
            out.append(f"By {label}, VGG16 beats VGG19: the VGG-only write-up's order (VGG16 > VGG19 > VGG24).")
        else:
            out.append(f"By {label}, these runs support neither write-up's order of VGG16 and VGG19.")
        if "VGG24" in groups:
            open_ = [o for o in groups if o != "VGG24"
                     and compare(groups["VGG24"], groups[o]).verdict != ("less" if higher else "greater")]
            out.append(f"By {label}, VGG24 is " + ("last, as both write-ups say." if not open_ else
                       f"not shown to be last: the test does not separate it from {' or '.join(open_)}."))
    return " ".join(out)


def degradation_sentence(df: pd.DataFrame) -> str:
    """He et al.'s degradation check from a runs table of one study: final training error, shallowest vs deepest,
    tested over seeds."""
    lines = []
    for residual, g in df.groupby("residual"):
        depths = sorted(set(g["depth"]))
        if len(depths) < 2:
            continue
        lo, hi = depths[0], depths[-1]
        err = {d: list(1 - g[g["depth"] == d]["train_acc"]) for d in (lo, hi)}
        c = compare(err[hi], err[lo])
        name = "residual" if residual else "plain"
        reading = {"greater": f"the deeper {name} network trains *worse* (degradation)",
                   "less": f"the deeper {name} network trains better",
                   "indistinguishable": f"not distinguishable with {c.seeds}",
                   "one seed": "a single seed cannot tell whether the difference is real"}[c.verdict]
        lines.append(f"**{name}**: final training error {c.mean_b:.3f} at {lo} layers against {c.mean_a:.3f} at "
                     f"{hi} layers ({c.seeds}{f', Welch p = {sci(c.p, 2)}' if c.p is not None else ''}): {reading}.")
    if not lines:
        return "Only one depth was trained, so depth cannot be compared."
    return " ".join(lines) + (" He et al. report degradation for plain networks (plain-56 above plain-20 in training "
                              "error) and the reverse for ResNets.")


def depth_effect_sentences(df: pd.DataFrame, trained: pd.DataFrame, metric: str = "test_acc") -> list[str]:
    """For each study and variant of a runs table: the depth with the best mean, whether a test over seeds separates
    it from the other depths, and which depths did not train (`trained`: sweep.trainability of the same table)."""
    ok = trained.set_index(["study", "depth", "residual"])
    lines = []
    for (study, residual), g in df.groupby(["study", "residual"]):
        per_depth = {d: list(gd[metric]) for d, gd in sorted(g.groupby("depth"))}
        means = {d: np.nanmean(v) if np.isfinite(v).any() else -np.inf for d, v in per_depth.items()}
        values = ", ".join(f"depth {d}: {m:.3f}" for d, m in means.items())
        variant = "residual" if residual else "plain"
        line = f"**{study}, {variant}**: {metric.replace('_', ' ')} {values}"
        if len(per_depth) > 1:
            best = max(means, key=means.get)
            tests = {d: compare(per_depth[best], v) for d, v in per_depth.items() if d != best}
            where = ("the deepest" if best == max(per_depth) else "the shallowest" if best == min(per_depth)
                     else "an intermediate depth")
            beaten = [d for d, c in tests.items() if c.verdict == "greater"]
            tied = [str(d) for d, c in tests.items() if c.verdict != "greater"]
            if len(beaten) == len(tests):
                line += f"; {where} ({best}) is best, ahead of every other depth beyond the seed spread"
            elif any(c.verdict == "one seed" for c in tests.values()):
                line += f"; the highest single run is at depth {best} ({where}), but one seed cannot rank depths"
            else:
                line += (f"; the highest mean is at depth {best} ({where}), but it is not distinguishable from "
                         f"depth {', '.join(tied)} with {next(iter(tests.values())).seeds}")
        phrases = [f"depth {d} {ok.loc[(study, d, residual), 'seeds_trained']}" for d in per_depth
                   if ok.loc[(study, d, residual), "trained"] != "yes"]
        line += ("; " + "; ".join(phrases) + "." if phrases else
                 "; every depth trained in every seed." if len(per_depth) > 1 else "; it trained in every seed.")
        lines.append(line)
    return lines


def deepest_trained_sentence(df: pd.DataFrame, trained_table: pd.DataFrame, study: str, metric: str = "test_acc") -> str:
    """The lab's remaining ConvNet claim, per variant: does the deepest network that still trains (in every seed)
    beat the shallowest one? Tested over seeds (`trained_table`: sweep.trainability of the same runs table)."""
    ok = trained_table.set_index(["study", "depth", "residual"])["trained"]
    lines = []
    for residual, g in df[df["study"] == study].groupby("residual"):
        depths = sorted(set(g["depth"]))
        trained = [d for d in depths if ok[(study, d, residual)] == "yes"]
        variant = "residual" if residual else "plain"
        if len(trained) < 2 or trained[-1] == depths[0]:
            lines.append(f"**{study}, {variant}**: fewer than two depths trained in every seed, so there is no deeper "
                         "trained network to compare with the shallowest.")
            continue
        deep, shallow = trained[-1], depths[0]
        c = compare(list(g[g.depth == deep][metric]), list(g[g.depth == shallow][metric]))
        reading = {"greater": "it does beat the shallowest", "less": "it is worse than the shallowest",
                   "indistinguishable": f"the two are not distinguishable with {c.seeds}",
                   "one seed": "one seed cannot tell"}[c.verdict]
        lines.append(f"**{study}, {variant}**: the deepest network that trains in every seed has depth {deep} "
                     f"({metric.replace('_', ' ')} {c.mean_a:.3f}) against {c.mean_b:.3f} at depth {shallow}: {reading}.")
    return "\n\n".join(lines)
