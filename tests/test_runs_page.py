"""The page of every run (reports/<profile>/runs.html): its rows from hand-made records and a hand-made store (no
training), its escaping, and what a reader gets in a real browser (sorting, filtering, curves)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from labcore.core.config import RunConfig
from labcore.report import browse, runs_page
from labcore.store import identity
from labcore.store.result import RunResult
from labcore.store.runs import RunStore
from labcore.store.tracking import run_name

from .synthetic import CONTENT, use_splits
from .test_browser import _chromium

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
LOST = "deadbeefdeadbeef"


def _history(epochs: int, start: float, nan_from: int | None = None) -> list[dict]:
    """A plausible epoch history: losses falling, accuracies rising; NaN from `nan_from` on (a diverged run)."""
    out = []
    for e in range(1, epochs + 1):
        loss = start * 0.8 ** e + 0.2
        row = {"epoch": e, "train_loss": loss, "val_loss": loss + 0.05 * e / epochs, "train_acc": 1 - loss / 3,
               "val_acc": 0.95 - loss / 3, "lr": 1e-3, "seconds": 0.1}
        if nan_from is not None and e >= nan_from:
            row.update(train_loss=math.nan, val_loss=math.inf)
        out.append(row)
    return out


def _result(cfg: RunConfig, seconds: float, estimate: float | None, **kw) -> RunResult:
    """A stored-looking result of `cfg`, fingerprinted with today's code and the synthetic data (so it is current)."""
    defaults = dict(history=_history(cfg.train.epochs, 2.0), test={"accuracy": 0.9}, n_params=100,
                    seconds=seconds, device="cpu: 2 threads", data_source="synthetic", estimate_seconds=estimate,
                    node="vm", code=identity.code_fingerprint("alone", cfg.model.family),
                    data={"name": cfg.data.name, "sha256": CONTENT})
    return RunResult(config=cfg, **{**defaults, **kw})


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A store with two ok MLP runs (one shared by 01 and 04), a failed CNN with a hostile error, a stale and a damaged
    run, and records that name them plus one key the store lacks."""
    use_splits(monkeypatch, lambda cfg: None)  # staleness is checked against the synthetic data's content
    store = RunStore(tmp_path / "runs")
    mlp = RunConfig.build({"name": "mnist"}, {"family": "mlp", "depth": 2, "width": 16}, {"epochs": 8, "lr": 1e-3})
    cnn = RunConfig.build({"name": "cifar10", "val_size": 1000, "subset": 4000},
                          {"family": "convnet", "depth": 6, "width": 8}, {"epochs": 6}, seed=2)
    shared, other, failed = mlp, mlp.replace(seed=1), cnn
    stale, damaged = cnn.replace(model={"residual": True}), cnn.replace(seed=3)
    weights = {"w": torch.zeros(2)}
    store.put(_result(shared, 30.0, 20.0), weights)
    store.put(_result(other, 9.0, 10.0), weights)
    store.put(_result(failed, 4.0, 8.0, status="failed", error=HOSTILE, node=HOSTILE, test={},
                      history=_history(6, 2.5, nan_from=4)))
    store.put(_result(stale, 120.0, 100.0, code={"labcore.core.train": "an older digest"}, fused=(0, 1, 2)), weights)
    store.put(_result(damaged, 5.0, 5.0), weights)
    (store.path(damaged) / "model.pt").unlink()
    records = [{"notebook": "01_mlp_baseline", "provenance": {"run_keys": [shared.key(), other.key()]}},
               {"notebook": "02_cnn_depth", "provenance": {"run_keys": {"convnet": [failed.key(), LOST],
                                                                         "residual": [stale.key(), damaged.key()]}}},
               {"notebook": "04_gradient_flow", "provenance": {"run_keys": [shared.key()]}}]
    cfgs = {"shared": shared, "other": other, "failed": failed, "stale": stale, "damaged": damaged}
    return store, records, cfgs, tmp_path


def test_one_row_per_run_with_its_notebooks_status_and_ratio(built):
    store, records, cfgs, _ = built
    rows = runs_page.rows(records, store)
    by_key = {r["key"]: r for r in rows}
    assert len(rows) == 6, "the run shared by 01 and 04 is one row"
    shared = by_key[cfgs["shared"].key()]
    assert shared["notebooks"] == ["01_mlp_baseline", "04_gradient_flow"]
    assert shared["label"] == shared["wandb"] == run_name(cfgs["shared"].label(), cfgs["shared"].key())
    assert shared["ratio"] == pytest.approx(1.5) and shared["status"] == "ok"
    assert (shared["family"], shared["depth"], shared["width"], shared["variant"], shared["seed"]) == ("mlp", 2, 16,
                                                                                                       "plain", 0)
    assert (shared["dataset"], shared["n_train"], shared["train_size"]) == ("mnist", 55_000, "full")
    assert shared["code"] == identity.digest_of(identity.code_fingerprint("alone", "mlp"))
    assert shared["data"] == f"mnist {CONTENT[:12]}" and shared["test_acc"] == 0.9
    assert [h["epoch"] for h in shared["history"]] == list(range(1, 9))
    assert set(shared["history"][0]) == {"epoch", "train_loss", "val_loss", "val_acc", "train_acc"}

    lost = by_key[LOST]
    assert lost["status"] == "lost" and lost["notebooks"] == ["02_cnn_depth"] and lost["history"] == []
    failed = by_key[cfgs["failed"].key()]
    assert failed["status"] == "failed" and HOSTILE in failed["note"] and failed["test_acc"] is None
    assert failed["history"][-1]["train_loss"] is None and failed["history"][-1]["val_loss"] is None, "NaN, inf: None"
    assert failed["n_train"] == 4000 and failed["train_size"] == "subset"
    stale = by_key[cfgs["stale"].key()]
    assert stale["status"] == "stale" and "other code" in stale["note"] and stale["fused"] is True
    assert by_key[cfgs["damaged"].key()]["status"] == "damaged"
    assert "model.pt" in by_key[cfgs["damaged"].key()]["note"]
    # notebook order, then label: 01's two runs, then 02's four
    assert [r["notebooks"][0] for r in rows] == ["01_mlp_baseline"] * 2 + ["02_cnn_depth"] * 4
    assert [r["label"] for r in rows[2:]] == sorted(r["label"] for r in rows[2:])


def test_the_page_escapes_every_string_and_embeds_json_safely(built):
    store, records, _, _ = built
    rows = runs_page.rows(records, store)
    text = runs_page.page("quick<b>", rows, banner_html="<div id='lc-banner'>banner</div>")
    assert "<img src=x" not in text and "alert(2)</script>" not in text and "quick<b>" not in text
    assert "&lt;img src=x" in text and "<div id='lc-banner'>banner</div>" in text
    assert text.count("</script>") == 2, "the only script ends are the page's own two"
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    embedded = text.split('<script type="application/json" id="lc-data">')[1].split("</script>")[0]
    data = json.loads(embedded)
    assert len(data) == 6 and any(HOSTILE in (d["note"] or "") for d in data)
    assert "href='index.html'" in text and "6 of 6 runs shown" in text


def _cells(page, header: str) -> list[str]:
    """The visible rows' cells under `header`, top to bottom."""
    return page.evaluate("""h => { const heads = Array.from(document.querySelectorAll('#lc-runs thead th'));
      const i = heads.findIndex(th => th.textContent.replace(/[\\u25b2\\u25bc]/g, '').trim() === h);
      return Array.from(document.querySelectorAll('#lc-runs tbody tr.lc-run')).filter(tr => !tr.hidden)
        .map(tr => tr.cells[i].dataset.v ?? tr.cells[i].textContent); }""", header)


def test_a_reader_sorts_filters_and_opens_curves_in_a_real_browser(built):
    _chromium()
    from playwright.sync_api import sync_playwright

    store, records, cfgs, tmp = built
    path = tmp / "runs.html"
    path.write_text(runs_page.page("quick", runs_page.rows(records, store)))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browse.chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": browse.WIDTH, "height": browse.HEIGHT})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(path.as_uri(), wait_until="load")
            head = page.locator("#lc-runs thead th", has_text="seconds").first
            head.click()
            up = _cells(page, "seconds")
            assert up == ["4.0", "9.0", "30.0", "120.0", "", ""], "numeric order; lost and damaged (no seconds) last"
            assert "\u25b2" in head.text_content()
            head.click()
            assert _cells(page, "seconds") == ["120.0", "30.0", "9.0", "4.0", "", ""], "reversed, empty still last"
            assert "\u25bc" in head.text_content()
            page.fill("#lc-filter", "mlp")
            assert page.text_content("#lc-count") == "2 of 6 runs shown" and len(_cells(page, "seconds")) == 2
            page.fill("#lc-filter", "convnet failed")
            assert page.text_content("#lc-count") == "1 of 6 runs shown"
            page.fill("#lc-filter", "baseline")
            assert page.text_content("#lc-count") == "0 of 6 runs shown", "a plain word never matches a notebook"
            page.fill("#lc-filter", "notebook:04")
            assert page.text_content("#lc-count") == "1 of 6 runs shown", "field:value looks in that column"
            page.fill("#lc-filter", "notebook:02 status:failed")
            assert page.text_content("#lc-count") == "1 of 6 runs shown"
            page.fill("#lc-filter", "")
            label = run_name(cfgs["shared"].label(), cfgs["shared"].key())
            page.locator("tr.lc-run", has_text=label).first.click()
            svg = page.locator("tr.lc-detail svg")
            assert svg.count() == 1 and svg.locator("path.lc-line").count() == 2 * 2
            assert label in svg.locator("text.lc-title").text_content()
            assert {"epoch", "cross-entropy loss", "accuracy", "train loss", "val loss", "val acc"} <= set(
                svg.locator("text").all_text_contents())
            page.screenshot(path=str(tmp / "runs.png"), full_page=True)
            assert (tmp / "runs.png").stat().st_size > 10_000 and not errors, errors
        finally:
            browser.close()


def test_the_executor_is_read_from_the_node_as_the_ray_pass_tags_it():
    from labcore.engine.raypass import executor_of

    assert executor_of("vm (ray node e7be6c1f)") == "ray"
    assert executor_of("vm") == "local" and executor_of(None) is None


def test_rows_that_would_read_alike_say_every_setting_they_differ_in(tmp_path, monkeypatch):
    """Any field tells two rows apart, not a chosen few: momentum, a seedless field, the epochs of 01's long run."""
    use_splits(monkeypatch, lambda cfg: None)
    store = RunStore(tmp_path / "runs")
    base = RunConfig.build({"name": "mnist"}, {"family": "mlp", "depth": 2, "width": 16},
                           {"epochs": 2, "optimizer": "sgd", "lr": 0.1})
    cfgs = [base, base.replace(train={"momentum": 0.5}), base.replace(train={"epochs": 3}), base.replace(seed=1)]
    for c in cfgs:
        store.put(_result(c, 1.0, 1.0), {"w": torch.zeros(2)})
    records = [{"notebook": "01_mlp_baseline", "provenance": {"run_keys": [c.key() for c in cfgs]}}]
    labels = {r["key"]: r["label"] for r in runs_page.rows(records, store)}
    name = {c.key(): run_name(c.label(), c.key()) for c in cfgs}
    assert labels == {
        cfgs[0].key(): f"{name[cfgs[0].key()]} (train.epochs 2, train.momentum 0.9)",
        cfgs[1].key(): f"{name[cfgs[1].key()]} (train.epochs 2, train.momentum 0.5)",
        cfgs[2].key(): f"{name[cfgs[2].key()]} (train.epochs 3, train.momentum 0.9)",
        cfgs[3].key(): name[cfgs[3].key()]}, labels


def test_a_zero_count_is_not_drawn_as_an_alarm():
    text = runs_page._intro([{"status": "ok"}])
    assert "<span class='lc-zero'>failed: 0</span>" in text and "<span class='lc-s-ok'>ok: 1</span>" in text


def test_a_run_under_a_second_shows_its_time_not_zero():
    """A smoke run's seconds and estimate beside its ratio: '0.043 s', never '0.0 s' against '0.0 s' at 2.12x."""
    from labcore.report import runs_page

    assert [runs_page._secs(s) for s in (0.043, 0.0203, 0.5, 5.26, 89.94)] == ["0.043 s", "0.02 s", "0.5 s", "5.3 s",
                                                                            "89.9 s"]
