"""Data: deterministic disjoint splits, image-folder loading, batching, augmentation, and no writes to the data root."""
import os

import pytest
import torch
from torchvision.io import write_png

from labcore.core import batches, data, decode
from labcore.core.config import DataConfig

from .conftest import needs_cifar, needs_mnist


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = data.split_indices(1000, 100, seed=3)
    tr2, va2 = data.split_indices(1000, 100, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 100 and len(tr) == 900
    assert not set(tr.tolist()) & set(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    assert not torch.equal(va, data.split_indices(1000, 100, seed=4)[1])


def test_split_refuses_an_empty_training_set():
    with pytest.raises(ValueError, match="val_size"):
        data.split_indices(10, 10, seed=0)


def test_batches_cover_every_example_once_and_normalise(toy):
    seen = []
    for xb, yb in batches.batches(toy.x_train, toy.y_train, 100, toy.mean, toy.std, torch.Generator().manual_seed(0)):
        assert xb.dtype == torch.float32 and xb.shape[1:] == toy.x_train.shape[1:]
        seen.append(yb)
    assert torch.cat(seen).sort().values.equal(toy.y_train.sort().values)
    x = batches.normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), (0.5,), (0.25,))
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_augment_crops_and_flips_without_changing_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = batches.augment(x, g, pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # Every output value is either padding (0) or a value of the same image and channel.
    for b in range(2):
        for c in range(3):
            assert set(out[b, c].unique().tolist()) <= set(x[b, c].unique().tolist()) | {0}
    assert torch.equal(batches.augment(x, torch.Generator().manual_seed(0), pad=2), out)  # seeded
    flips_only = batches.augment(x, g, pad=0)
    assert all(torch.equal(o, xi) or torch.equal(o, xi.flip(-1)) for o, xi in zip(flips_only, x))


def test_an_epoch_drawn_at_once_gives_the_batches_a_batch_by_batch_draw_gives():
    """The epoch's order, crops and flips travel to the device in one copy each; the batches stay bit-identical
    to drawing each batch's augmentation when it is made (what stored runs were trained with)."""
    x = torch.randint(0, 255, (300, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(300) % 10
    g = torch.Generator().manual_seed(5)
    fast = [xb for _ in range(2) for xb, _ in batches.batches(x, y, 128, (0.5,) * 3, (0.25,) * 3, g, augmentation=True)]
    g, slow = torch.Generator().manual_seed(5), []
    for _ in range(2):
        order = torch.randperm(300, generator=g)
        for start in range(0, 300, 128):
            slow.append(batches.normalize(batches.augment(x[order[start:start + 128]], g), (0.5,) * 3, (0.25,) * 3))
    assert len(fast) == len(slow) == 6 and all(torch.equal(a, b) for a, b in zip(fast, slow))


def _fake_image_folder(root, name, n_per_class=3, channels=3):
    for split in ("train", "test"):
        for k, cls in enumerate(("airplane", "automobile")):
            folder = root / name / split / cls
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                write_png(torch.full((channels, 32, 32), 10 * k + i, dtype=torch.uint8), str(folder / f"{i:04d}.png"))


def test_image_folder_layout_is_read_in_class_order_and_cached_outside_the_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _fake_image_folder(root, "cifar10")
    monkeypatch.setenv("LABCORE_DATA", str(root))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    os.chmod(root, 0o555)  # read-only: any write into the data root would fail
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    raw = data.load_raw("cifar10")
    assert raw.x_train.shape == (6, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert raw.x_train[4, 0, 0, 0].item() == 11  # class 1, image 0001
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert list((tmp_path / "cache").glob("cifar10-*.pt")), "decoded tensors are cached"
    assert torch.equal(data.load_raw("cifar10").x_train, raw.x_train)  # second load: from the cache


def test_files_that_change_while_decoded_are_decoded_again_not_served_under_their_new_signature(tmp_path, monkeypatch):
    """A copy finishing while labcore decodes: the cache records the files as they were when decoding began, so
    the next read sees they changed and decodes them again (the old tensors never pass for the new files)."""
    root = tmp_path / "data"
    _fake_image_folder(root, "cifar10")
    monkeypatch.setenv("LABCORE_DATA", str(root))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    real, decodes = data._decoded, []

    def decoded_while_copied(name, folder, may_download):
        raw = real(name, folder, may_download)
        if not decodes:  # the copy lands a new image while the first decode runs
            (root / "cifar10" / "train" / "airplane" / "0009.png").write_bytes(
                (root / "cifar10" / "train" / "airplane" / "0000.png").read_bytes())
        decodes.append(len(raw.y_train))
        return raw

    monkeypatch.setattr(data, "_decoded", decoded_while_copied)
    assert len(data.load_raw("cifar10").y_train) == 6
    assert len(data.load_raw("cifar10").y_train) == 7 and decodes == [6, 7], "decoded again, with the new image"
    assert len(data.load_raw("cifar10").y_train) == 7 and decodes == [6, 7], "then served from the cache"


def test_files_downloaded_while_decoding_are_signed_in_place_so_queries_know_them(tmp_path, monkeypatch):
    """No files before (torchvision downloads them inside the decode): the cache signs them once they are there,
    and a query (make plan) reads the content's hash without calling the runs stale."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("LABCORE_DATA", str(root))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    real = data._decoded

    def downloaded(name, folder, may_download):
        _fake_image_folder(root, "cifar10")
        return real(name, folder, may_download)

    monkeypatch.setattr(data, "_decoded", downloaded)
    raw = data.load_raw("cifar10")
    assert data.known_content("cifar10") == (data.content_sha256(raw), None)


def test_tensors_and_meta_of_two_decodes_at_once_are_never_served_as_a_pair(tmp_path, monkeypatch, capsys):
    """Two processes decoding changing files at once could leave one's tensors beside the other's meta (its
    signature and content hash): they share a token, so such a pair is decoded again, never served."""
    import json

    root = tmp_path / "data"
    _fake_image_folder(root, "cifar10")
    monkeypatch.setenv("LABCORE_DATA", str(root))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    data.load_raw("cifar10")
    [meta_file] = (tmp_path / "cache").glob("cifar10-*.json")
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "token": "another-decode"}))  # the other process's meta won the race
    decodes = []
    real = data._decoded
    monkeypatch.setattr(data, "_decoded", lambda *a: decodes.append(1) or real(*a))
    data.load_raw("cifar10")
    assert decodes == [1] and "come from two decodes at once" in capsys.readouterr().out
    data.load_raw("cifar10")
    assert decodes == [1], "the pair written by that decode is served"


def test_empty_or_incomplete_image_folders_are_named_errors(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / "cifar10" / split / "airplane").mkdir(parents=True)
    monkeypatch.setenv("LABCORE_DATA", str(root))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DataNotFoundError, match=r"no images under .*cifar10/train/<class>/: the image folder is empty"):
        data.load_raw("cifar10")
    _fake_image_folder(tmp_path / "partial", "cifar10")  # 6 + 6 images instead of 50,000 + 10,000
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "partial"))
    with pytest.raises(data.DataNotFoundError, match="has 6 training and 6 test images, not 50,000 and 10,000"):
        data.load(DataConfig(name="cifar10", val_size=2))


def test_missing_data_is_a_one_line_error_naming_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DataNotFoundError) as info:
        data.check("mnist")
    msg = str(info.value)
    assert "\n" not in msg and "does not exist" in msg and "LABCORE_DATA" in msg
    with pytest.raises(data.DataNotFoundError):
        data.load(DataConfig(name="mnist"))
    assert not (tmp_path / "nowhere").exists(), "nothing is created in a given data root"


@needs_mnist
def test_real_mnist_splits():
    s = data.load(DataConfig(name="mnist", val_size=5000))
    assert s.x_train.shape == (55000, 1, 28, 28) and s.x_val.shape == (5000, 1, 28, 28)
    assert s.x_test.shape == (10000, 1, 28, 28) and s.x_train.dtype == torch.uint8
    assert s.y_train.bincount().min() > 4000  # every digit present


@needs_cifar
def test_real_cifar10_splits():
    s = data.load(DataConfig(name="cifar10", val_size=5000, subset=1000))
    assert s.x_train.shape == (1000, 3, 32, 32) and s.x_val.shape == (5000, 3, 32, 32)
    assert s.x_test.shape == (10000, 3, 32, 32)
    assert s.classes[0] == "airplane" and s.classes[-1] == "truck"


def test_the_compact_arrays_layout_round_trips_and_a_subset_says_so(tmp_path, monkeypatch):
    """`<root>/<name>.npz` (what `make bundle` writes): loaded as written; a partial copy serves only the splits
    it holds, and every report built from it names it as a subset."""
    import pytest
    import torch

    from labcore.core import data
    from labcore.core.config import DataConfig

    g = torch.Generator().manual_seed(0)
    raw = data.Raw(torch.randint(0, 255, (300, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(300) % 10,
                   torch.randint(0, 255, (50, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(50) % 10, "x")
    root = tmp_path / "data"
    data.save_arrays(raw, root / "mnist.npz", partial=True)
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    loaded = data.load_raw("mnist", root)
    assert torch.equal(loaded.x_train, raw.x_train) and torch.equal(loaded.y_test, raw.y_test)
    assert loaded.source.startswith("arrays-subset:") and "300 training, 50 test images" in loaded.source
    splits = data.load(DataConfig("mnist", val_size=100, subset=200, test_subset=50), root)
    assert len(splits.y_train) == 200 and len(splits.y_val) == 100 and len(splits.y_test) == 50
    with pytest.raises(data.DataNotFoundError, match="is a subset, too small for data.val_size=100, subset=250"):
        data.load(DataConfig("mnist", val_size=100, subset=250, test_subset=50), root)


def test_each_missing_data_case_is_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataNotFoundError, match=r"LABCORE_DATA=.*nowhere does not exist; point LABCORE_DATA at"):
        data.check("mnist")
    (tmp_path / "wrong" / "photos").mkdir(parents=True)
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "wrong"))
    with pytest.raises(data.DataNotFoundError, match=r"LABCORE_DATA=.*wrong holds photos; looked for .*MNIST/raw"):
        data.check("mnist")
    raw = tmp_path / "partial" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"x")
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "partial"))
    with pytest.raises(data.DataNotFoundError) as info:
        data.check("mnist")
    assert "is incomplete: it lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte" in str(info.value)
    assert "\n" not in str(info.value)


def test_unset_and_offline_says_so_and_leaves_no_folder_behind(tmp_path, monkeypatch):
    from labcore import paths

    monkeypatch.delenv("LABCORE_DATA", raising=False)
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "DEFAULT_DATA", tmp_path / "data")
    from urllib.error import URLError

    def offline(name, root, download):
        (root / "MNIST" / "raw").mkdir(parents=True)  # torchvision creates its folders before it fails
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(decode, "_torchvision", offline)
    # check() before a build, and fingerprint(), which a stored run's staleness asks for (make plan): both may
    # download into labcore's own ./data, and both say that LABCORE_DATA is unset (not that it names no folder)
    for ask in (data.check, lambda name: data.fingerprint.__wrapped__(name)):
        with pytest.raises(data.DataNotFoundError) as info:
            ask("mnist")
        assert "LABCORE_DATA is not set" in str(info.value) and "downloading it failed (URLError" in str(info.value)
        assert "connect to the internet" in str(info.value)
        assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".download-*")), "nothing left behind"
