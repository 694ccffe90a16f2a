"""What a MoCo v3 step is built from, shared by the trainer and the bare benchmark loop.

The network (:func:`build_model`), the optimiser (:func:`build_optimizer`), the device
(:func:`resolve_device`), mixed precision (:class:`_Precision`) and the step's forward pass
(:func:`_loss`); :class:`~ie_engine.ssl.trainer.SSLTrainer` and
:func:`~ie_engine.ssl.throughput.bare_train_throughput` assemble the same parts.

Weight decay and LARS' layer-wise scaling apply to weight matrices and convolution kernels only,
not to biases or BatchNorm parameters (as in MoCo v3 / BYOL).

Device: ``"auto"`` picks CUDA when present. On CUDA only: mixed precision when ``amp`` (bfloat16
where the GPU supports it, else float16 with a gradient scaler), channels-last memory when
``channels_last``, and ``torch.backends.cudnn.benchmark`` is switched on (by the trainer). The
CPU path runs in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightly.utils.lars import LARS
from torch import Tensor

from ie_engine.config import TrainConfig
from ie_engine.errors import ConfigError
from ie_engine.ssl.loss import symmetric_loss
from ie_engine.ssl.model import MoCoV3, load_backbone_checkpoint

SGD_MOMENTUM = 0.9


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (CUDA checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return device


def _check_config(config: TrainConfig) -> None:
    if config.batch_size < 2:
        raise ConfigError("batch_size must be at least 2 (contrastive loss)")
    if config.temperature <= 0:
        raise ConfigError("temperature must be positive")
    if not 0.0 <= config.momentum_encoder <= 1.0:
        raise ConfigError("momentum_encoder must be in [0, 1]")
    if config.lr < 0:
        raise ConfigError("lr must not be negative")


def base_checkpoint(config: TrainConfig) -> str | None:
    """The weights file the backbone starts from: ``init_checkpoint``, else the packaged file
    of a packaged base, else None for ``scratch``. Raises :class:`BaseUnavailable` for a base
    whose file was never resolved (``ssl.bases.resolve_base`` names what to put where)."""
    if config.init_checkpoint:
        return config.init_checkpoint
    if config.base == "scratch":
        return None
    from ie_engine.bases import BaseUnavailable, packaged_base, spec_of

    if spec_of(config.base).source != "packaged":
        raise BaseUnavailable(
            f"base {config.base!r} has no weights file in this configuration; resolve it "
            "first (`ie bases` says where its file goes)"
        )
    resolved = packaged_base(config.base)
    return str(resolved.checkpoint) if resolved.checkpoint is not None else None


def build_model(config: TrainConfig, seed: int) -> MoCoV3:
    """The network of ``config``, initialised from ``seed`` without touching the global RNG,
    then from its base's weights (:func:`base_checkpoint`; backbone only, the momentum copy
    follows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoCoV3(
            config.arch,
            config.image_size,
            hidden_dim=config.hidden_dim,
            proj_dim=config.proj_dim,
            frozen_stages=config.frozen_stages,
        )
    checkpoint = base_checkpoint(config)
    if checkpoint:
        load_backbone_checkpoint(model.backbone, checkpoint)
        model.sync_momentum()
    return model


def build_optimizer(model: MoCoV3, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or LARS at ``lr * batch_size / 256``; weight decay on ``ndim > 1``
    parameters only (LARS then also skips the others' layer-wise scaling)."""
    lr = config.lr * config.batch_size / 256
    params = model.online_parameters()
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=SGD_MOMENTUM)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}; choose sgd or lars")


class _Precision:
    """Autocast and gradient scaling for one device (all off on CPU)."""

    def __init__(self, device: torch.device, config: TrainConfig) -> None:
        self.device = device
        on_cuda = device.type == "cuda"
        self.enabled = bool(config.amp) and on_cuda
        self.dtype = (
            torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.channels_last = bool(config.channels_last) and on_cuda
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.enabled and self.dtype == torch.float16
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _loss(model: MoCoV3, v1: Tensor, v2: Tensor, momentum: float, temperature: float) -> Tensor:
    """The step's forward pass: views ``(B, 3, S, S)`` -> scalar loss (momentum EMA included)."""
    q1 = model.query(v1)
    q2 = model.query(v2)
    model.update_momentum(momentum)
    k1 = model.key(v1)
    k2 = model.key(v2)
    return symmetric_loss(q1, q2, k1, k2, temperature)


__all__ = [
    "SGD_MOMENTUM",
    "base_checkpoint",
    "build_model",
    "build_optimizer",
    "resolve_device",
]
