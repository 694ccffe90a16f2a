"""MoCo v3 self-supervised trainer.

One step, for a batch of ``B`` uint8 images ``(B, 3, H, W)`` chosen by the caller:

1. two augmented views ``(B, 3, S, S)`` (:class:`~ie_engine.ssl.augment.TwoViewAugment`);
2. queries ``q1, q2 = predictor(encoder(v1, v2))``; the momentum encoder is moved towards the
   online encoder (EMA, constant factor ``TrainConfig.momentum_encoder``) and gives the keys
   ``k1, k2`` without gradient (MoCo v3's order);
3. loss ``ctr(q1, k2) + ctr(q2, k1)`` (:mod:`ie_engine.ssl.loss`); a NaN or infinite loss raises
   :class:`~ie_engine.errors.NonFiniteLossError` *before* the optimiser touches the weights;
4. SGD (momentum 0.9) or LARS, learning rate ``lr * B / 256``, constant.

Momentum factor: MoCo v3 raises it from ``m`` to 1 with a cosine over a known number of epochs;
exploration trains for an open-ended number of short rounds, so the factor stays constant.

The network, optimiser, device and precision are built by :mod:`ie_engine.ssl.step` (weight
decay, CUDA and mixed precision are described there); :func:`bare_train_throughput`
(:mod:`ie_engine.ssl.throughput`) times the same step without the trainer around it. Their
public names are importable from here too. ``torch.set_num_threads`` is called only when
``num_threads`` is set.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ie_engine.config import TrainConfig
from ie_engine.errors import (
    Cancelled,
    CheckpointError,
    NonFiniteLossError,
    TrainingError,
)
from ie_engine.ssl.augment import TwoViewAugment, eval_transform
from ie_engine.ssl.model import MoCoV3, backbone_digest
from ie_engine.ssl.step import (
    SGD_MOMENTUM,
    _check_config,
    _loss,
    _Precision,
    base_checkpoint,
    build_model,
    build_optimizer,
    resolve_device,
)
from ie_engine.ssl.throughput import bare_train_throughput
from ie_engine.types import ProgressSink

STATE_FORMAT = "ie-ssl-trainer/1"
PROGRESS_PHASE = "train"

SampleBatch = Callable[[int, torch.Generator], Tensor]
"""``sample_batch(step, generator) -> uint8 (B, 3, H, W)``: the caller's data mix for a step."""


@dataclass
class TrainStats:
    """What one :meth:`SSLTrainer.train` call did."""

    losses: list[float] = field(default_factory=list)
    """Loss of every step run, in order."""
    images_per_second: float = 0.0
    """Source images (not views) per wall-clock second, data sampling included."""
    seconds: float = 0.0
    first_step: int = 0
    """Global index of the first step of this call."""


def _cpu_copy(obj: Any) -> Any:
    """Deep copy with every tensor detached and copied to the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class SSLTrainer:
    """MoCo v3 training of one network; see the module docstring for the step.

    Everything random (initial weights, the caller's batch sampling, augmentations) derives from
    ``seed``: the network is initialised under ``torch.manual_seed(seed)`` in a forked RNG (the
    global RNG is left as it was), and a CPU ``torch.Generator`` seeded with ``seed`` is passed
    to ``sample_batch`` and drives the augmentations. :meth:`state_dict` saves that generator,
    so a resumed trainer continues exactly as an uninterrupted one (bit-exact on CPU; on CUDA up
    to cuDNN's non-deterministic kernels).
    """

    def __init__(self, config: TrainConfig, *, seed: int) -> None:
        _check_config(config)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config = config
        self.seed = seed
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._precision = _Precision(self.device, config)
        model = build_model(config, seed).to(self.device)
        if self._precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: MoCoV3 = model
        self.optimizer = build_optimizer(self.model, config)
        self.augment = TwoViewAugment(
            config.image_size,
            min_crop_area=config.min_crop_area,
            mean=config.input_mean,
            std=config.input_std,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self._base_file = base_checkpoint(config)
        self._base_digest: str | None = None
        self.global_step = 0
        """Optimiser steps taken so far (over all :meth:`train` calls, resumes included)."""

    @property
    def feature_dim(self) -> int:
        """Width ``D`` of :meth:`embed`'s rows (512 ResNet-18, 2048 ResNet-50, 1280
        EfficientNet-Lite0)."""
        return self.model.feature_dim

    def base_record(self) -> dict[str, str | None]:
        """The base this network started from: ``{"name", "digest"}``, the digest being
        :func:`~ie_engine.ssl.model.backbone_digest` of its weights file (None for random
        weights), computed once."""
        if self._base_file and self._base_digest is None:
            self._base_digest = backbone_digest(self._base_file)
        return {"name": self.config.base, "digest": self._base_digest}

    # -- training ---------------------------------------------------------------------------

    def train(
        self,
        sample_batch: SampleBatch,
        steps: int,
        *,
        progress: ProgressSink | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainStats:
        """Run ``steps`` optimiser steps on batches from ``sample_batch(step, generator)``.

        ``sample_batch`` returns uint8 ``(B, 3, H, W)`` (any ``B >= 2``, usually
        ``config.batch_size``) and must draw any randomness from ``generator``.
        ``should_stop`` is polled before every step; when it returns True,
        :class:`Cancelled` is raised (the steps already taken are kept). Raises
        :class:`NonFiniteLossError` as soon as a step's loss is NaN or infinite (that step's
        update is not applied) and :class:`TrainingError` on a malformed batch.
        Progress is reported under the phase ``"train"`` (finished also on error).
        """
        if steps < 0:
            raise ValueError("steps must not be negative")
        stats = TrainStats(first_step=self.global_step)
        images = 0
        self.model.train()
        if progress is not None:
            progress.start(PROGRESS_PHASE, steps)
        start = time.perf_counter()
        try:
            for _ in range(steps):
                if should_stop is not None and should_stop():
                    raise Cancelled(f"training cancelled before step {self.global_step}")
                loss, n = self._train_step(sample_batch)
                stats.losses.append(loss)
                images += n
                if progress is not None:
                    progress.advance(PROGRESS_PHASE)
            self._precision.sync()
        finally:
            stats.seconds = time.perf_counter() - start
            if progress is not None:
                progress.finish(PROGRESS_PHASE)
        stats.images_per_second = images / stats.seconds if stats.seconds > 0 else 0.0
        return stats

    def _batch(self, sample_batch: SampleBatch) -> Tensor:
        images = sample_batch(self.global_step, self.generator)
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise TrainingError(f"sample_batch must return a (B, 3, H, W) tensor, got {shape}")
        if images.dtype != torch.uint8:
            raise TrainingError(f"sample_batch must return uint8 images, got {images.dtype}")
        if images.shape[0] < 2:
            raise TrainingError("a contrastive step needs at least 2 images")
        return images.to(self.device, non_blocking=True)

    def _train_step(self, sample_batch: SampleBatch) -> tuple[float, int]:
        images = self._batch(sample_batch)
        v1, v2 = self.augment(images, self.generator)
        prec = self._precision
        cfg = self.config
        with prec.autocast():
            loss = _loss(
                self.model,
                prec.prepare(v1),
                prec.prepare(v2),
                cfg.momentum_encoder,
                cfg.temperature,
            )
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(self.global_step, value)
        self.optimizer.zero_grad(set_to_none=True)
        prec.scaler.scale(loss).backward()
        prec.scaler.step(self.optimizer)
        prec.scaler.update()
        self.global_step += 1
        return value, int(images.shape[0])

    # -- features ---------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, images: Tensor, *, batch_size: int = 256) -> Tensor:
        """L2-normalised backbone features of the online network.

        ``images``: uint8 ``(N, 3, H, W)`` (CPU or device), resized and centre-cropped to
        ``config.image_size`` by :func:`~ie_engine.ssl.augment.eval_transform`. Returns a CPU
        float32 ``(N, D)`` tensor with unit rows. Runs in eval mode (BatchNorm running
        statistics) without gradient; the previous train/eval mode is restored.
        """
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"embed expects uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        was_training = self.model.training
        self.model.eval()
        out: list[Tensor] = []
        try:
            for chunk in images.split(batch_size):
                x = eval_transform(
                    chunk.to(self.device),
                    self.config.image_size,
                    mean=self.config.input_mean,
                    std=self.config.input_std,
                )
                with self._precision.autocast():
                    feats = self.model.backbone(self._precision.prepare(x))
                out.append(F.normalize(feats.float(), dim=1).cpu())
        finally:
            self.model.train(was_training)
        if not out:
            return torch.empty(0, self.feature_dim)
        return torch.cat(out)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """CPU copy of the online backbone's weights (what ``init_checkpoint`` files hold)."""
        state: dict[str, Tensor] = _cpu_copy(self.model.backbone.state_dict())
        return state

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: a CPU copy (later training does not alter it).

        Keys: ``format``, ``config`` (the :class:`TrainConfig` as a dict), ``seed``, ``step``,
        ``model`` (online encoder + predictor), ``momentum`` (momentum encoder), ``optimizer``,
        ``scaler`` and ``rng`` (the trainer's generator state).
        """
        full = self.model.state_dict()
        prefix = "momentum_encoder."
        return {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "seed": self.seed,
            "step": self.global_step,
            "model": _cpu_copy({k: v for k, v in full.items() if not k.startswith(prefix)}),
            "momentum": _cpu_copy(self.model.momentum_encoder.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "scaler": _cpu_copy(self._precision.scaler.state_dict()),
            "rng": self.generator.get_state().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; raises :class:`CheckpointError` when it is
        malformed or from a different network shape (arch, image size, head widths)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"not a trainer state (expected format {STATE_FORMAT!r})")
        saved = state.get("config", {})
        for key in ("arch", "image_size", "hidden_dim", "proj_dim"):
            mine = getattr(self.config, key)
            if saved.get(key) != mine:
                raise CheckpointError(
                    f"trainer state has {key}={saved.get(key)!r}, this trainer {key}={mine!r}"
                )
        try:
            merged = dict(state["model"])
            merged.update({f"momentum_encoder.{k}": v for k, v in state["momentum"].items()})
            self.model.load_state_dict(merged, strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self._precision.scaler.load_state_dict(state["scaler"])
            self.generator.set_state(state["rng"])
            self.global_step = int(state["step"])
            self.seed = int(state.get("seed", self.seed))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"cannot restore trainer state: {exc}") from exc


__all__ = [
    "PROGRESS_PHASE",
    "SGD_MOMENTUM",
    "STATE_FORMAT",
    "SSLTrainer",
    "SampleBatch",
    "TrainStats",
    "bare_train_throughput",
    "build_model",
    "build_optimizer",
    "resolve_device",
]
