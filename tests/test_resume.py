"""Interrupted runs resume (labcore.store.resume_state): killed between epochs or mid-epoch, a run continues from
its last finished epoch and ends bit for bit where the same run never interrupted ends, alone or fused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labcore.core.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # 512 synthetic training images in batches of 128


def _cfgs(seeds: list[int]) -> list[dict]:
    return [RunConfig.build(model={"family": "mlp", "width": 8, "depth": 2}, seed=s,
                            train={"epochs": 4, "lr": 1e-2, "schedule": "cosine"}).to_dict() for s in seeds]


def _train(tmp_path: Path, cfgs: list[dict], kill_at: int, name: str) -> subprocess.CompletedProcess:
    out = tmp_path / f"{name}.pt"
    return subprocess.run([sys.executable, "-m", "tests.resume_child", str(kill_at), json.dumps(cfgs),
                           str(tmp_path / "resume"), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["alone", "fused"])
@pytest.mark.parametrize("kill_at, where", [(2 * STEPS_PER_EPOCH + 1, "between epochs"),
                                            (2 * STEPS_PER_EPOCH + 3, "mid-epoch")])
def test_a_killed_run_resumes_bit_for_bit(tmp_path, seeds, kill_at, where):
    cfgs = _cfgs(seeds)
    whole = _train(tmp_path / "whole", cfgs, 0, "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = _train(tmp_path, cfgs, kill_at, "resumed")
    assert killed.returncode == -9, f"the child should have been killed {where}: {killed.stderr[-2000:]}"
    assert list((tmp_path / "resume").iterdir()), "the state of the finished epochs is on disk"
    again = _train(tmp_path, cfgs, 0, "resumed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed at epoch 3 of 4" in again.stdout
    a = torch.load(tmp_path / "whole" / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for x, y in zip(a, b):
        assert _without_seconds(x["history"]) == _without_seconds(y["history"]), where
        assert x["test"] == y["test"]
        assert all(torch.equal(x["weights"][k], y["weights"][k]) for k in x["weights"]), f"weights differ ({where})"
        assert x["resumed"] is None and y["resumed"]["epoch"] == 2 and "W&B" in y["resumed"]["wandb"]
    assert not list((tmp_path / "resume").iterdir()), "a finished run keeps no resume state"


def test_a_resume_state_of_other_runs_or_a_damaged_one_is_named_and_training_starts_over(tmp_path, capsys):
    from labcore.store import resume_state

    cfgs = [RunConfig.build(**c) for c in _cfgs([0])]
    info = {"code": {"m": "1"}, "data": {"sha256": "d"}, "device": "cpu",
            "numerics": {"precision": "fp32", "threads": 2, "deterministic": False}, "compiled": False}
    folder = resume_state.resume_folder(tmp_path, cfgs)
    state = resume_state.Resume(folder, cfgs, info, [(0, 2)])
    state.saver([{}], 0.0)({"epoch": 1})
    assert resume_state.Resume(folder, cfgs, info, [(2, 0)]).load()["loop"] == {"epoch": 1}
    # Another attempt that would compute or keep otherwise than the state's: its record could not say how every
    # epoch was computed (another thread count, DETERMINISTIC=1, compiled), or it asks for an epoch already passed.
    for what, other_info, checkpoints in [
            ("code", {**info, "code": {"m": "2"}}, [(0, 2)]),
            ("numerics", {**info, "numerics": {**info["numerics"], "threads": 1}}, [(0, 2)]),
            ("numerics", {**info, "numerics": {**info["numerics"], "deterministic": True}}, [(0, 2)]),
            ("compiled", {**info, "compiled": True}, [(0, 2)]),
            ("checkpoints", info, [(0, 1, 2)])]:
        state.saver([{}], 0.0)({"epoch": 1})
        assert resume_state.Resume(folder, cfgs, other_info, checkpoints).load() is None and not folder.exists(), what
        assert f"saved with another {what}; training from epoch 1" in capsys.readouterr().out, what
    state.saver([{}], 0.0)({"epoch": 1})
    (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:100])  # cut short
    assert resume_state.Resume(folder, cfgs, info, [(0, 2)]).load() is None and not folder.exists()
