"""The base model's training resumes after a kill and ends as an uninterrupted one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ie_engine.config import train_preset
from ie_engine.pretrain import train_resumable
from ie_engine.ssl.trainer import SSLTrainer

DATA = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8,
                     generator=torch.Generator().manual_seed(0))


def _sample(_step: int, gen: torch.Generator) -> torch.Tensor:
    return DATA[torch.randint(len(DATA), (8,), generator=gen)]


def _trainer() -> SSLTrainer:
    return SSLTrainer(train_preset("tiny"), seed=3)


class _Killed(Exception):
    pass


def test_killed_pretraining_resumes_bit_exact(tmp_path: Path) -> None:
    whole = _trainer()
    losses_whole = train_resumable(whole, _sample, 4, partial=tmp_path / "a.partial.pt",
                                   save_every=2)
    assert len(losses_whole) == 4 and whole.global_step == 4

    # A run killed during its fourth step: the sample function dies there.
    partial = tmp_path / "b.partial.pt"
    first = _trainer()

    def dying(step: int, gen: torch.Generator) -> torch.Tensor:
        if step == 3:
            raise _Killed
        return _sample(step, gen)

    with contextlib.suppress(_Killed):
        train_resumable(first, dying, 4, partial=partial, save_every=2)
    assert partial.is_file() and first.global_step == 3

    resumed = _trainer()  # a new process: fresh weights, then the partial state
    messages: list[str] = []
    losses = train_resumable(resumed, _sample, 4, partial=partial, save_every=2,
                             say=messages.append)
    assert any("resuming at step 2" in m for m in messages)
    assert losses == losses_whole
    for a, b in zip(whole.backbone_state_dict().values(),
                    resumed.backbone_state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_damaged_partial_file_is_ignored(tmp_path: Path) -> None:
    partial = tmp_path / "c.partial.pt"
    partial.write_bytes(b"not a checkpoint")
    messages: list[str] = []
    trainer = _trainer()
    losses = train_resumable(trainer, _sample, 1, partial=partial, save_every=5,
                             say=messages.append)
    assert len(losses) == 1 and trainer.global_step == 1
    assert any("starting over" in m for m in messages)
