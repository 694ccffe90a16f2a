"""The base model's training resumes after a kill and ends as an uninterrupted one."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ie_engine.config import train_preset
from ie_engine.pretrain import PretrainSettings, pretrain_base, train_resumable
from ie_engine.search import build_corpus
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
    assert any("ignoring" in m for m in messages)


class _ConstantEmbedder:
    """Captions are not used by pretraining: one fixed unit vector each."""

    name = "test-constant"
    dim = 4

    def embed(self, texts: list[str], *, progress: object = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def _backbone(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu")["backbone"]
    return state


def test_a_longer_base_continues_a_shorter_one_and_ends_as_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """``ie pretrain --steps 4`` after ``--steps 2`` trains 2 more steps from the kept state,
    and its weights equal those of 4 steps trained in one go."""
    corpus = tmp_path / "corpus"
    build_corpus(corpus, embedder=_ConstantEmbedder(), sources=("openclipart",),
                 exclude=lambda it: not it.category.startswith("animals/birds"))
    settings = PretrainSettings(preset="tiny", steps=2, batch_size=8, max_images=24,
                                num_threads=1)
    said: list[str] = []
    common = {"corpus_dir": corpus, "say": said.append}
    short = pretrain_base(data_dir=tmp_path / "a", settings=settings, **common)
    assert short.name.endswith("-2.pt")
    assert (short.parent / short.name.replace("-2.pt", "-2.state.pt")).is_file()
    assert not list(short.parent.glob("*.partial.pt"))

    longer = pretrain_base(data_dir=tmp_path / "a", settings=replace(settings, steps=4), **common)
    assert longer.name.endswith("-4.pt") and longer != short
    assert any("continuing at step 2" in m for m in said)
    meta = json.loads(longer.with_suffix(".json").read_text())
    assert meta["continued_from_steps"] == 2

    said.clear()
    whole = pretrain_base(data_dir=tmp_path / "b", settings=replace(settings, steps=4), **common)
    assert not any("continuing" in m for m in said)
    a, b = _backbone(longer), _backbone(whole)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], _backbone(short)[k]) for k in a)

    said.clear()
    assert pretrain_base(data_dir=tmp_path / "a", settings=settings, **common) == short
    assert any("cached" in m for m in said)
