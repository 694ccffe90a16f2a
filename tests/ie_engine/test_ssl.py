"""Tests of the MoCo v3 trainer, its network, loss and augmentations (CPU, tiny sizes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from lightly.utils.lars import LARS
from torch import Tensor

from ie_engine.config import TrainConfig, train_preset
from ie_engine.errors import Cancelled, CheckpointError, NonFiniteLossError, TrainingError
from ie_engine.ssl import augment as A
from ie_engine.ssl.loss import contrastive_loss, symmetric_loss
from ie_engine.ssl.model import (
    MoCoV3,
    backbone_digest,
    build_backbone,
    load_backbone_checkpoint,
    stem_stride,
)
from ie_engine.ssl.trainer import SSLTrainer, bare_train_throughput

# Smaller than the "tiny" preset so the whole file runs in seconds on a shared CPU: 16 px crops,
# batch 4, narrow heads, one thread (no oversubscription on a loaded machine).
CFG: TrainConfig = replace(
    train_preset("tiny"), image_size=16, batch_size=4, hidden_dim=32, proj_dim=16, num_threads=1
)
DATA = torch.randint(
    0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
)


def sample_batch(step: int, generator: torch.Generator) -> Tensor:
    idx = torch.randperm(DATA.shape[0], generator=generator)[: CFG.batch_size]
    return DATA[idx]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- loss ---------------------------------------------------------------------------------------


def slow_ctr(q: Tensor, k: Tensor, t: float) -> float:
    """ctr(q, k) written out with Python loops and math (float64)."""
    qs = [[float(v) for v in row] for row in q]
    ks = [[float(v) for v in row] for row in k]

    def unit(v: list[float]) -> list[float]:
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    qs, ks = [unit(v) for v in qs], [unit(v) for v in ks]
    total = 0.0
    for i, qi in enumerate(qs):
        logits = [sum(a * b for a, b in zip(qi, kj, strict=True)) / t for kj in ks]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        total += log_z - logits[i]
    return total / len(qs) * 2 * t


@pytest.mark.parametrize("t", [0.1, 0.2, 1.0])
def test_loss_matches_slow_reference(t: float) -> None:
    g = torch.Generator().manual_seed(3)
    q1, q2, k1, k2 = (torch.randn(7, 5, generator=g) * 3 for _ in range(4))
    assert contrastive_loss(q1, k2, t).item() == pytest.approx(slow_ctr(q1, k2, t), rel=1e-5)
    expected = slow_ctr(q1, k2, t) + slow_ctr(q2, k1, t)
    assert symmetric_loss(q1, q2, k1, k2, t).item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_low_for_aligned_pairs() -> None:
    q = torch.eye(6)
    assert contrastive_loss(q, q, 0.05).item() < 1e-6
    with pytest.raises(ValueError):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(4, 4), 0.2)


# -- augmentations ------------------------------------------------------------------------------


def test_two_views_shape_and_determinism() -> None:
    aug = A.TwoViewAugment(16)
    v1, v2 = aug(DATA, torch.Generator().manual_seed(5))
    w1, w2 = aug(DATA, torch.Generator().manual_seed(5))
    assert v1.shape == v2.shape == (16, 3, 16, 16)
    assert v1.dtype == torch.float32
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, v2)
    o1, _ = aug(DATA, torch.Generator().manual_seed(6))
    assert not torch.equal(v1, o1)


def test_views_differ_per_image() -> None:
    same = DATA[:1].repeat(8, 1, 1, 1)
    v = A.augment_view(same, 16, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(v[i].flatten()[:50].tolist()) for i in range(8)}
    assert len(distinct) == 8


def test_crop_boxes_follow_the_rule() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = A.sample_crop_boxes(500, 30, 40, scale=(0.2, 1.0), generator=g)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert bool((x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 40).all() and (y2 <= 30).all())
    area = (x2 - x1) * (y2 - y1) / (30 * 40)
    assert float(area.min()) > 0.15 and float(area.max()) <= 1.0
    assert torch.equal(boxes, torch.round(boxes))
    ratio = (x2 - x1) / (y2 - y1)
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6


def test_full_box_crop_is_identity() -> None:
    x = DATA[:3].float() / 255
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 3)
    assert torch.allclose(A.crop_resize(x, boxes, 20), x, atol=1e-5)


def test_colour_ops_match_torchvision() -> None:
    x = DATA[:6].float() / 255
    f = torch.tensor([0.6, 0.8, 1.0, 1.1, 1.3, 1.4])
    h = torch.tensor([-0.1, -0.05, 0.0, 0.02, 0.07, 0.1])
    pairs: list[tuple[Callable[[Tensor, Tensor], Tensor], Callable[..., Tensor], Tensor]] = [
        (A.adjust_brightness, TF.adjust_brightness, f),
        (A.adjust_contrast, TF.adjust_contrast, f),
        (A.adjust_saturation, TF.adjust_saturation, f),
        (A.adjust_hue, TF.adjust_hue, h),
    ]
    for mine, ref, p in pairs:
        expected = torch.stack([ref(x[i], float(p[i])) for i in range(6)])
        assert torch.allclose(mine(x.clone(), p), expected, atol=1e-4), mine.__name__


def test_blur_only_for_large_crops() -> None:
    assert not A.TwoViewAugment(64).blur
    big = torch.randint(0, 256, (2, 3, 100, 100), dtype=torch.uint8)
    aug = A.TwoViewAugment(96)
    assert aug.blur
    v1, _ = aug(big, torch.Generator().manual_seed(0))
    assert v1.shape == (2, 3, 96, 96) and torch.isfinite(v1).all()


def test_eval_transform() -> None:
    gray = torch.full((2, 3, 30, 40), 128, dtype=torch.uint8)
    out = A.eval_transform(gray, 16)
    assert out.shape == (2, 3, 16, 16)
    mean = torch.tensor(A.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(A.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(out, (128 / 255 - mean) / std.expand_as(out), atol=1e-4)
    assert torch.equal(A.eval_transform(DATA, 16), A.eval_transform(DATA, 16))
    with pytest.raises(ValueError):
        A.eval_transform(DATA.float(), 16)


# -- network ------------------------------------------------------------------------------------


def test_backbone_stems_and_dims() -> None:
    assert stem_stride(32) == 2 and stem_stride(64) is None and stem_stride(224) is None
    net, dim = build_backbone("resnet18", 32)
    assert dim == 512
    conv1 = net.get_submodule("conv1")
    assert isinstance(conv1, torch.nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (2, 2)
    assert isinstance(net.maxpool, torch.nn.Identity)
    with torch.no_grad():
        net.eval()
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    mid, _ = build_backbone("resnet18", 64)  # ImageNet stem above 48 px
    mid_conv1 = mid.get_submodule("conv1")
    assert isinstance(mid_conv1, torch.nn.Conv2d) and mid_conv1.kernel_size == (7, 7)
    big, dim50 = build_backbone("resnet50", 224)
    big_conv1 = big.get_submodule("conv1")
    assert dim50 == 2048 and isinstance(big_conv1, torch.nn.Conv2d)
    assert big_conv1.kernel_size == (7, 7)


def test_heads_and_momentum_copy() -> None:
    m = MoCoV3("resnet18", 16, hidden_dim=32, proj_dim=16)
    last_bn = list(m.encoder.projection.modules())[-1]
    assert isinstance(last_bn, torch.nn.BatchNorm1d) and not last_bn.affine
    assert params_equal(m.encoder, m.momentum_encoder)
    assert not any(p.requires_grad for p in m.momentum_encoder.parameters())
    x = torch.randn(4, 3, 16, 16)
    assert m.query(x).shape == (4, 16) and m.key(x).shape == (4, 16)
    assert not m.key(x).requires_grad


# -- init checkpoint ----------------------------------------------------------------------------


def test_init_checkpoint_loading(tmp_path: Path) -> None:
    donor = SSLTrainer(CFG, seed=11)
    path = tmp_path / "backbone.pt"
    torch.save(donor.backbone_state_dict(), path)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"backbone": donor.backbone_state_dict(), "epoch": 3}, wrapped)
    for p in (path, wrapped):
        t = SSLTrainer(replace(CFG, init_checkpoint=str(p)), seed=0)
        assert params_equal(t.model.backbone, donor.model.backbone)
        assert params_equal(t.model.momentum_encoder.backbone, donor.model.backbone)
    plain = SSLTrainer(CFG, seed=0)
    assert not params_equal(plain.model.backbone, donor.model.backbone)


def test_init_checkpoint_errors(tmp_path: Path) -> None:
    net, _ = build_backbone("resnet18", 16)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_backbone_checkpoint(net, tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_backbone_checkpoint(net, junk)
    other = tmp_path / "other.pt"
    torch.save({"head.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match=r"missing keys: .*conv1\.weight"):
        load_backbone_checkpoint(net, other)
    big = tmp_path / "imagenet_stem.pt"
    torch.save(build_backbone("resnet18", 224)[0].state_dict(), big)
    with pytest.raises(CheckpointError, match="incompatible"):
        load_backbone_checkpoint(net, big)
    partial = tmp_path / "partial.pt"
    new_weight = net.state_dict()["conv1.weight"] + 1
    torch.save({"module.conv1.weight": new_weight}, partial)
    missing = load_backbone_checkpoint(net, partial)
    assert "conv1.weight" not in missing and "layer1.0.conv1.weight" in missing
    assert torch.equal(net.state_dict()["conv1.weight"], new_weight)


# -- trainer ------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []

    def start(self, phase: str, total: int | None) -> None:
        self.events.append(("start", phase, total))

    def advance(self, phase: str, n: int = 1) -> None:
        self.events.append(("advance", phase, n))

    def finish(self, phase: str) -> None:
        self.events.append(("finish", phase, None))


@pytest.fixture(scope="module")
def reference() -> SSLTrainer:
    """A trainer after 2 uninterrupted steps."""
    t = SSLTrainer(CFG, seed=7)
    t.train(sample_batch, 2)
    return t


def test_determinism(reference: SSLTrainer) -> None:
    rec = Recorder()
    t = SSLTrainer(CFG, seed=7)
    stats = t.train(sample_batch, 2, progress=rec)
    assert len(stats.losses) == 2 and all(math.isfinite(v) for v in stats.losses)
    assert stats.images_per_second > 0 and stats.seconds > 0 and stats.first_step == 0
    assert t.global_step == 2
    assert params_equal(t.model, reference.model)
    assert rec.events == [
        ("start", "train", 2),
        ("advance", "train", 1),
        ("advance", "train", 1),
        ("finish", "train", None),
    ]
    other = SSLTrainer(CFG, seed=8)
    assert not params_equal(other.model, t.model)


def test_resume_is_exact(reference: SSLTrainer, tmp_path: Path) -> None:
    first = SSLTrainer(CFG, seed=7)
    first.train(sample_batch, 1)
    state = first.state_dict()
    first.train(sample_batch, 1)  # must not alter the saved state
    path = tmp_path / "trainer.pt"
    torch.save(state, path)
    resumed = SSLTrainer(CFG, seed=123)  # the seed comes back from the state
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.global_step == 1 and resumed.seed == 7
    stats = resumed.train(sample_batch, 1)
    assert stats.first_step == 1
    assert params_equal(resumed.model, reference.model)
    assert torch.equal(resumed.generator.get_state(), reference.generator.get_state())
    ref_opt = reference.optimizer.state_dict()["state"]
    res_opt = resumed.optimizer.state_dict()["state"]
    assert all(
        torch.equal(ref_opt[i]["momentum_buffer"], res_opt[i]["momentum_buffer"]) for i in ref_opt
    )


def test_optimizers_and_lr_scaling() -> None:
    sgd = SSLTrainer(CFG, seed=0)
    assert isinstance(sgd.optimizer, torch.optim.SGD)
    assert sgd.optimizer.param_groups[0]["lr"] == pytest.approx(CFG.lr * CFG.batch_size / 256)
    assert sgd.optimizer.param_groups[1]["weight_decay"] == 0.0
    lars = SSLTrainer(replace(CFG, optimizer="lars"), seed=0)
    assert isinstance(lars.optimizer, LARS)
    assert math.isfinite(lars.train(sample_batch, 1).losses[0])


def test_load_state_rejects_other_shapes(reference: SSLTrainer) -> None:
    other = SSLTrainer(replace(CFG, proj_dim=8), seed=0)
    with pytest.raises(CheckpointError, match="proj_dim"):
        other.load_state_dict(reference.state_dict())
    with pytest.raises(CheckpointError):
        other.load_state_dict({"format": "something else"})


def test_non_finite_loss_stops_at_once() -> None:
    t = SSLTrainer(replace(CFG, lr=1e20), seed=0)  # diverges: the weights overflow
    with pytest.raises(NonFiniteLossError) as info:
        t.train(sample_batch, 6)
    assert info.value.step == t.global_step
    assert not math.isfinite(info.value.value)
    # the offending step's update was not applied
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_cancel_is_cooperative() -> None:
    t = SSLTrainer(CFG, seed=0)
    polls: list[int] = []

    def stop() -> bool:
        polls.append(t.global_step)
        return len(polls) > 1

    rec = Recorder()
    with pytest.raises(Cancelled):
        t.train(sample_batch, 5, should_stop=stop, progress=rec)
    assert polls == [0, 1] and t.global_step == 1
    assert rec.events[-1] == ("finish", "train", None)


def test_bad_batches_are_rejected() -> None:
    t = SSLTrainer(CFG, seed=0)
    with pytest.raises(TrainingError, match="uint8"):
        t.train(lambda s, g: DATA[:4].float(), 1)
    with pytest.raises(TrainingError, match="at least 2"):
        t.train(lambda s, g: DATA[:1], 1)


def test_embed(reference: SSLTrainer) -> None:
    feats = reference.embed(DATA, batch_size=5)
    assert feats.shape == (16, 512) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=1), torch.ones(16), atol=1e-5)
    assert reference.model.training
    assert torch.allclose(feats, reference.embed(DATA), atol=1e-5)
    assert reference.embed(DATA[:0]).shape == (0, 512)


def test_bare_loop_runs() -> None:
    assert bare_train_throughput(CFG, DATA[:3], 1, warmup=0) > 0


def test_backbone_digest_is_the_weights_not_the_file(tmp_path: Path) -> None:
    net, _ = build_backbone("resnet18", 16)
    state = net.state_dict()
    bare, wrapped = tmp_path / "bare.pt", tmp_path / "wrapped.pt"
    torch.save(state, bare)
    torch.save({"backbone": state, "meta": {"train_seconds": 12.5}}, wrapped)
    assert bare.read_bytes() != wrapped.read_bytes()
    assert backbone_digest(bare) == backbone_digest(wrapped)
    changed = {k: v.clone() for k, v in state.items()}
    changed["conv1.weight"][0, 0, 0, 0] += 1e-6
    torch.save(changed, tmp_path / "changed.pt")
    assert backbone_digest(tmp_path / "changed.pt") != backbone_digest(bare)
    with pytest.raises(CheckpointError, match="cannot read"):
        backbone_digest(tmp_path / "missing.pt")
