"""Queries only read (labcore.store.runs.RunStore(query=True), labcore.core.data.known_content): `make plan` and the
runs page never decode, download or write data; where the data cannot be checked they still count what is stored,
and say so. The data's identity follows its content: a file rewritten in place is noticed even with its size and
modification time restored."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcore.core import data as data_mod
from labcore.core import decode
from labcore.engine import plan
from labcore.store import runs

from .synthetic import synthetic_splits, use_splits

ROOT = Path(__file__).resolve().parents[1]


def _smoke_mlp():
    return next(p for p in plan.profile_runs("smoke") if p.cfg.model.family == "mlp" and p.cfg.data.name == "mnist")


@pytest.mark.parametrize("folder", ["empty", "missing", "a file"])
def test_make_plan_counts_stored_runs_when_the_data_cannot_be_read(tmp_path, monkeypatch, capsys, folder):
    use_splits(monkeypatch, lambda cfg: synthetic_splits(shape=(1, 28, 28), classes=10))
    p = _smoke_mlp()
    store = runs.RunStore(tmp_path / "store", memo=tmp_path / "memo.json")
    runs.run(p.cfg, store, device="cpu", tracking="disabled", checkpoints=p.checkpoints)
    data = tmp_path / "data"
    {"empty": lambda: data.mkdir(), "missing": lambda: None, "a file": lambda: data.write_text("x")}[folder]()
    monkeypatch.setenv("LABCORE_DATA", str(data))
    monkeypatch.setattr(decode, "_decode", lambda *a: pytest.fail("a query decoded the data"))
    query = runs.RunStore(tmp_path / "store", memo=tmp_path / "memo.json", query=True)
    d = plan.describe(plan.build_plan("smoke"), calibrate=False, store=query)
    buf = io.StringIO()
    plan.print_plan(d, file=buf)
    out = buf.getvalue()
    assert f"{len(d['planned'])} runs, 1 stored" in out.splitlines()[0]
    # Not there at all: the line says what `make train` would say about it, found by looking at folders only.
    said = {"empty": f"mnist not found: LABCORE_DATA={data} holds nothing", "missing": f"LABCORE_DATA={data} does not exist",
            "a file": f"mnist not found: LABCORE_DATA={data}"}[folder]
    assert said in out and "(`make train` stops there); stored runs are counted by their code alone" in out
    assert not data.is_dir() or not any(data.iterdir()), "nothing written into the data root"


def test_make_plan_on_the_command_line_with_an_empty_data_folder(tmp_path):
    env = {**os.environ, "LABCORE_DATA": str(tmp_path / "empty"), "LABCORE_RUNS": str(tmp_path / "runs")}
    (tmp_path / "empty").mkdir()
    out = subprocess.run([sys.executable, "-m", "labcore", "plan", "--profile", "smoke", "--no-calibrate"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.startswith("plan smoke: 29 runs, 0 stored, 29 pending")
    assert "holds nothing" in out.stdout and "Traceback" not in out.stdout + out.stderr
    assert not list((tmp_path / "empty").iterdir()), "nothing written into the data root"


def test_a_data_file_rewritten_in_place_changes_the_signature_even_with_size_and_mtime_restored(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    f = folder / "train-images-idx3-ubyte"
    f.write_bytes(b"\1" * 64)
    before = data_mod.source_signature("mnist", tmp_path)
    st = f.stat()
    f.write_bytes(b"\2" * 64)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert data_mod.source_signature("mnist", tmp_path) != before


def _tiny_mnist(root: Path, n: int = 10) -> Path:
    """A valid MNIST in torchvision's layout with `n` images per split (idx files: magic, sizes, bytes)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"".join(
            d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(range(n)))
    return raw


def test_a_damaged_decoded_cache_is_discarded_and_decoded_again_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    _tiny_mnist(tmp_path / "data")
    first = data_mod.load_raw("mnist", tmp_path / "data")
    cache = next((tmp_path / "cache").glob("mnist-*.pt"))
    cache.write_bytes(cache.read_bytes()[:300])  # cut short
    again = data_mod.load_raw("mnist", tmp_path / "data")
    assert "is damaged" in capsys.readouterr().out and again.x_train.equal(first.x_train)


def test_a_data_file_cut_short_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    raw = _tiny_mnist(tmp_path / "data")
    f = raw / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(data_mod.DataNotFoundError) as err:
        data_mod.load_raw("mnist", tmp_path / "data")
    assert str(f) in str(err.value) and "cut short" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("query", [True, False])
def test_a_store_works_out_each_datasets_content_once_however_many_runs_it_checks(tmp_path, monkeypatch, query):
    """The signature stats every file of a dataset (60,000 for CIFAR-10); a plan of 99 runs asked it 198 times."""
    asked = []
    monkeypatch.setattr(data_mod, "known_content", lambda name, root=None: asked.append(name) or ("sha-" + name, None))
    monkeypatch.setattr(runs.training, "data_content", lambda name: asked.append(name) or "sha-" + name)
    store = runs.RunStore(tmp_path / "store", memo=tmp_path / "memo.json", query=query)
    for cfg in [p.cfg for p in plan.profile_runs("smoke") if p.cfg.data.name == "mnist"][:5]:
        record = {"code": runs.identity.code_fingerprint("alone", cfg.model.family), "data": {"sha256": "sha-mnist"}}
        assert runs.stale_reason(record, cfg, store._content) is None
        assert store.staleness(cfg) is None  # not stored: asks nothing
    store._content("cifar10")
    assert asked == ["mnist", "cifar10"], "one content check per dataset and store"
