"""One seed's run killed by a callback and resumed from its checkpoint, against the same run uninterrupted: the
property `gen-3d --resume` promises, checked on every prior that has it (tests/fsd3d/test_gen3d.py, MVDream)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsd3d.checkpoint import initial_state, load_checkpoint
from fsd3d.train import train_seed


def assert_resume_is_bit_for_bit(prior, train, seed: int, ckpt: Path, kill_step: int, checkpoint_step: int):
    """Kill seed `seed` after step `kill_step`, resume from `ckpt` (last written at `checkpoint_step`): every scene
    parameter equals the uninterrupted run's, bit for bit."""
    full = train_seed(prior, train, seed, initial_state(train, seed))

    def kill(state, log):
        if log.step == kill_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_seed(prior, train, seed, initial_state(train, seed), ckpt, callback=kill)
    state = load_checkpoint(ckpt, train, torch.device("cpu"))
    assert state.step == checkpoint_step  # the last checkpoint before the kill
    resumed = train_seed(prior, train, seed, state, ckpt)
    for (name, a), (_, b) in zip(full.scene.named_parameters(), resumed.scene.named_parameters()):
        assert torch.equal(a, b), name
