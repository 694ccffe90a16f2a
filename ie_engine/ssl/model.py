"""The MoCo v3 network: a ResNet or EfficientNet-Lite backbone, a projection MLP, a prediction
MLP and a momentum (EMA) copy of backbone + projection.

Shapes, for a batch of ``B`` images of ``S`` x ``S`` pixels:

* backbone: ``(B, 3, S, S)`` float -> ``(B, F)`` global-average-pooled features, ``F`` = 512
  (ResNet-18), 2048 (ResNet-50) or 1280 (EfficientNet-Lite0);
* projection: ``(B, F)`` -> ``(B, P)`` with ``P = TrainConfig.proj_dim``;
* predictor: ``(B, P)`` -> ``(B, P)``.

Small images (``S <= 48``) get a small-image stem (ResNets only): the 7x7 stride-2 convolution
and the 3x3 stride-2 max-pool of the ImageNet ResNet divide the resolution by 4 before the first
residual stage, and the stages divide it by 8 more, so a 32 px image would be 1x1 at the last
stage. The small stem is a single 3x3 stride-2 convolution and no max-pool: 32 px ends 2x2, like
64 px with the ImageNet stem, at the same cost per pixel of the first stage.

Above 48 px the ImageNet stem stays, a deliberate trade for CPU time. Measured for one
``cpu-small`` training step (ResNet-18, batch 64 at 64 px, two views, forward + backward +
momentum keys) on 2 busy CPU cores: ImageNet stem (2x2 last stage) about 1.1 s, a 3x3 stride-2
stem without max-pool (4x4) about 3.3 s, the stride-1 stem (8x8) about 20 s. The loop trains
for many iterations on a laptop; 3x the cost per step would buy fewer steps, not a better model.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os

import torch
from lightly.models.modules.heads import ProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50

from ie_engine.errors import CheckpointError
from ie_engine.ssl.layouts import backbone_state

log = logging.getLogger(__name__)

SMALL_IMAGE_MAX = 48
"""Images of at most this many pixels a side get the small-image stem."""


def stem_stride(image_size: int) -> int | None:
    """Stride of the small-image 3x3 stem for ``image_size``; None = the ImageNet stem."""
    if image_size > SMALL_IMAGE_MAX:
        return None
    return 2


ARCHS = ("resnet18", "resnet50", "effnet-lite0")
"""Backbones :func:`build_backbone` knows."""


def build_backbone(arch: str, image_size: int) -> tuple[nn.Module, int]:
    """A randomly initialised backbone without its classifier (nothing is downloaded):
    torchvision's ResNet-18 / ResNet-50, or timm's EfficientNet-Lite0 (``tf_efficientnet_lite0``:
    TensorFlow's "same" padding and BatchNorm epsilon, so the packaged ImageNet weights give the
    features they were trained to give).

    Returns ``(backbone, feature_dim)``; ``backbone`` maps ``(B, 3, S, S)`` to ``(B, feature_dim)``
    (512, 2048 and 1280 global-average-pooled features).
    """
    if arch == "effnet-lite0":
        import timm  # imported here: only this backbone needs it

        effnet: nn.Module = timm.create_model("tf_efficientnet_lite0", pretrained=False,
                                              num_classes=0)
        return effnet, int(getattr(effnet, "num_features"))  # noqa: B009 (typed as Tensor|Module)
    if arch == "resnet18":
        net = resnet18(weights=None)
    elif arch == "resnet50":
        net = resnet50(weights=None)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    stride = stem_stride(image_size)
    if stride is not None:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=stride, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feature_dim = int(net.fc.in_features)
    net.fc = nn.Identity()
    return net, feature_dim


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> ProjectionHead:
    """MoCo v3's 3-layer projector: (Linear-BN-ReLU) x 2, Linear, BN without affine.

    ``(B, in_dim)`` -> ``(B, out_dim)``; linear layers have no bias (each is followed by a BN).
    """
    return ProjectionHead(
        [
            (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), False),
            (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), False),
            (hidden_dim, out_dim, nn.BatchNorm1d(out_dim, affine=False), None, False),
        ]
    )


def prediction_mlp(dim: int, hidden_dim: int) -> ProjectionHead:
    """MoCo v3's 2-layer predictor (ResNet variant): Linear-BN-ReLU, Linear.

    ``(B, dim)`` -> ``(B, dim)``; no bias, no BN after the last layer, as in MoCo v3.
    """
    return ProjectionHead(
        [
            (dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), False),
            (hidden_dim, dim, None, None, False),
        ]
    )


class Encoder(nn.Module):
    """Backbone + projection: ``(B, 3, S, S)`` -> ``(B, P)``; ``features`` gives ``(B, F)``."""

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def features(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, F)`` pooled backbone features (not normalised)."""
        out: Tensor = self.backbone(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, P)`` projections (not normalised)."""
        out: Tensor = self.projection(self.backbone(x))
        return out


def backbone_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's stages from the input on: the stem, then each stage of blocks (ResNet:
    ``layer1`` .. ``layer4``; EfficientNet-Lite: ``blocks[0]`` .. ``blocks[6]``, then the head
    convolution). :attr:`TrainConfig.frozen_stages` counts in these."""
    def part(name: str) -> nn.Module:
        module = getattr(backbone, name)
        assert isinstance(module, nn.Module)
        return module

    if hasattr(backbone, "conv_stem"):
        blocks = part("blocks")
        return [[part("conv_stem"), part("bn1")], *[[b] for b in blocks.children()],
                [part("conv_head"), part("bn2")]]
    return [[part("conv1"), part("bn1")], [part("layer1")], [part("layer2")], [part("layer3")],
            [part("layer4")]]


class MoCoV3(nn.Module):
    """The online network (``encoder`` + ``predictor``) and its momentum copy.

    ``momentum_encoder`` starts as an exact copy of ``encoder``, never receives gradients and is
    moved towards ``encoder`` by :meth:`update_momentum` (an exponential moving average of the
    parameters; its BatchNorm running statistics come from its own forward passes).
    """

    def __init__(
        self, arch: str, image_size: int, *, hidden_dim: int, proj_dim: int, frozen_stages: int = 0
    ) -> None:
        super().__init__()
        backbone, feature_dim = build_backbone(arch, image_size)
        stages = backbone_stages(backbone)
        if not 0 <= frozen_stages < len(stages):
            raise ValueError(f"frozen_stages must be in [0, {len(stages) - 1}] for {arch}")
        self.frozen: list[nn.Module] = [m for stage in stages[:frozen_stages] for m in stage]
        for module in self.frozen:
            module.requires_grad_(False)
        self.feature_dim = feature_dim
        self.encoder = Encoder(backbone, projection_mlp(feature_dim, hidden_dim, proj_dim))
        self.predictor = prediction_mlp(proj_dim, hidden_dim)
        self.momentum_encoder = copy.deepcopy(self.encoder)
        deactivate_requires_grad(self.momentum_encoder)

    @property
    def backbone(self) -> nn.Module:
        """The online backbone (the network whose features are evaluated and kept)."""
        return self.encoder.backbone

    def online_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates: encoder and predictor (not the momentum copy, not
        the frozen stages)."""
        return [p for p in (*self.encoder.parameters(), *self.predictor.parameters())
                if p.requires_grad]

    def train(self, mode: bool = True) -> MoCoV3:
        """As :meth:`nn.Module.train`, but the frozen stages stay in eval mode: their
        BatchNorm layers keep the base's running statistics (standard fine-tuning practice),
        so a frozen stage computes exactly what the base computed."""
        super().train(mode)
        frozen = {id(m) for m in self.frozen}
        for online in self.frozen:
            online.eval()
        # The momentum copy's counterparts: same module paths under momentum_encoder.
        names = {id(m): n for n, m in self.encoder.named_modules()}
        by_name = dict(self.momentum_encoder.named_modules())
        for module_id in frozen:
            twin = by_name.get(names.get(module_id, ""))
            if twin is not None:
                twin.eval()
        return self

    def query(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, P)``: online encoder then predictor."""
        out: Tensor = self.predictor(self.encoder(x))
        return out

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, P)``: the momentum encoder, without gradient."""
        out: Tensor = self.momentum_encoder(x)
        return out

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``momentum = m * momentum + (1 - m) * online`` for every encoder parameter."""
        update_momentum(self.encoder, self.momentum_encoder, m)

    def sync_momentum(self) -> None:
        """Make the momentum encoder an exact copy of the online encoder (after loading)."""
        self.momentum_encoder.load_state_dict(self.encoder.state_dict())


def _read_backbone_state(name: str) -> dict[str, Tensor]:
    """The backbone tensors of a checkpoint file in any layout of :mod:`ie_engine.ssl.layouts`."""
    try:
        obj = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as exc:  # any read or unpickling failure: an unusable file
        raise CheckpointError(f"cannot read backbone checkpoint {name}: {exc}") from exc
    return backbone_state(obj, name)[1]


def backbone_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the backbone weights in a checkpoint file (names, dtypes, shapes and values;
    not the file's bytes, so metadata such as timings does not change it): two files with the
    same digest start a run from the same weights. Raises :class:`CheckpointError` on a file
    that cannot be read or holds no state dict."""
    h = hashlib.sha256()
    for key, value in sorted(_read_backbone_state(os.fspath(path)).items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_backbone_checkpoint(backbone: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load backbone weights from a local file into ``backbone`` (``strict=False``).

    The file is in any layout of :mod:`ie_engine.ssl.layouts`: our own (a backbone state dict,
    or one under ``"backbone"``; keys prefixed ``module.`` or ``backbone.`` are accepted), the
    official MoCo v3 checkpoint, torchvision's ImageNet weights, or the packaged
    EfficientNet-Lite port. Returns the backbone
    keys that the file did not provide (logged as a warning when there are any).

    Raises :class:`CheckpointError` when the file is missing or unreadable, holds no state dict,
    has a tensor of the wrong shape, or when none of its keys matches the backbone (the message
    lists the keys that were expected and some of those found).
    """
    name = os.fspath(path)
    state = _read_backbone_state(name)
    expected = set(backbone.state_dict())
    if not expected.intersection(state):
        for prefix in ("module.", "backbone.", "encoder.backbone."):
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if expected.intersection(stripped):
                state = stripped
                break
    matched = expected.intersection(state)
    if not matched:
        missing = sorted(expected)
        found = sorted(state)
        raise CheckpointError(
            f"{name}: no key matches the {len(missing)}-tensor backbone; missing keys: "
            f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}; "
            f"the file has: {', '.join(found[:12])}{' ...' if len(found) > 12 else ''}"
        )
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch (e.g. a 7x7 stem into a 3x3 one)
        raise CheckpointError(f"{name}: incompatible backbone weights: {exc}") from exc
    missing_keys = list(result.missing_keys)
    if missing_keys:
        log.warning(
            "%s: %d backbone tensors not in the checkpoint, left at their initial values: %s",
            name,
            len(missing_keys),
            ", ".join(missing_keys[:12]),
        )
    if result.unexpected_keys:
        log.warning(
            "%s: ignored %d keys that are not backbone tensors", name, len(result.unexpected_keys)
        )
    return missing_keys


__all__ = [
    "ARCHS",
    "SMALL_IMAGE_MAX",
    "Encoder",
    "MoCoV3",
    "backbone_digest",
    "backbone_stages",
    "build_backbone",
    "load_backbone_checkpoint",
    "prediction_mlp",
    "projection_mlp",
    "stem_stride",
]
