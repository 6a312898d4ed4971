"""A training process for tests/test_resume.py: trains runs on the synthetic splits with a resume folder, and kills
itself (SIGKILL: nothing is flushed, nothing cleaned up) when it is about to take training step `kill_at`."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from labcore.core import step
from labcore.core.config import RunConfig
from labcore.store import training

from tests.synthetic import CONTENT, synthetic_splits


def main(kill_at: int, cfgs: list[dict], resume_root: str, out: str) -> None:
    """Train `cfgs` together (stacked when several) and write their histories and weights to `out`."""
    import torch

    training.load_splits = lambda cfg: synthetic_splits()
    training.data_content = lambda name: CONTENT
    taken = [0]
    for cls in (step.Alone, step.Stacked):
        def counting(self, parts, alive, _real=cls.step):
            taken[0] += 1
            if taken[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(self, parts, alive)
        cls.step = counting
    trained = training.train_runs([RunConfig.build(**c) for c in cfgs], "cpu", "disabled",
                                  resume_root=Path(resume_root))
    torch.save([{"history": t.result.history, "test": t.result.test.get("accuracy"), "weights": t.model_state,
                 "resumed": t.result.resumed} for t in trained], out)


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4])
