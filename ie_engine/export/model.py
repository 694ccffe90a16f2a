"""The trained encoder as files another program can load without this project.

``export_model(run_dir, out)`` writes::

    backbone.pt              the online backbone's state dict (torchvision ResNet, no fc;
                             small-image stem below 48 px, see ie_engine.ssl.model)
    embedder.torchscript.pt  TorchScript: uint8 or [0, 1] float images (B, 3, H, W) -> unit
                             feature rows (B, D), the run's evaluation preprocessing included
    model.json               architecture, image size, feature size, run figures, file hashes
    MODEL_CARD.md            what the model is, how it was trained, how well, how to use it

The TorchScript module embeds exactly as the run scored images (``SSLTrainer.embed``): resize
the shorter side to ``size / 0.875``, centre crop ``size``, ImageNet normalisation, backbone,
L2 normalisation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ie_engine.errors import CheckpointError
from ie_engine.export.records import RunData, load_run
from ie_engine.ssl.augment import IMAGENET_MEAN, IMAGENET_STD
from ie_engine.ssl.model import build_backbone

BACKBONE_PREFIX = "encoder.backbone."
CROP_FRACTION = 0.875


class Embedder(nn.Module):
    """Evaluation preprocessing + backbone + L2 normalisation, scriptable."""

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.short_side = max(image_size, round(image_size / CROP_FRACTION))
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def forward(self, images: Tensor) -> Tensor:
        """uint8 (0-255) or float (0-1) ``(B, 3, H, W)`` RGB -> float ``(B, D)`` unit rows."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        height, width = x.shape[2], x.shape[3]
        size = self.image_size
        scale = self.short_side / min(height, width)
        # int(): TorchScript's round() of a float is a float
        new_h = max(size, int(round(height * scale)))  # noqa: RUF046
        new_w = max(size, int(round(width * scale)))  # noqa: RUF046
        if new_h != height or new_w != width:
            x = F.interpolate(x, size=[new_h, new_w], mode="bilinear", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
        top = (new_h - size) // 2
        left = (new_w - size) // 2
        x = x[:, :, top : top + size, left : left + size]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        feats = self.backbone(x.contiguous())
        return F.normalize(feats, dim=1)


def backbone_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The run's trained online backbone (eval mode) and its train config, from a run
    checkpoint (``Explorer.state_dict()``)."""
    trainer = state.get("trainer") or {}
    train_cfg = dict(trainer.get("config") or state.get("config", {}).get("train") or {})
    if "arch" not in train_cfg or "image_size" not in train_cfg:
        raise CheckpointError("the checkpoint holds no trainer configuration")
    weights = {k.removeprefix(BACKBONE_PREFIX): v for k, v in trainer.get("model", {}).items()
               if k.startswith(BACKBONE_PREFIX)}
    if not weights:
        raise CheckpointError("the checkpoint holds no backbone weights")
    backbone, _ = build_backbone(str(train_cfg["arch"]), int(train_cfg["image_size"]))
    backbone.load_state_dict(weights, strict=True)
    return backbone.eval(), train_cfg


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _figures(run: RunData) -> dict[str, Any]:
    last = run.history[-1] if run.history else {}
    first = run.history[0] if run.history else {}
    out: dict[str, Any] = {}
    for key in ("knn_accuracy", "mean_image_reward", "mean_concept_reward", "loss"):
        if key in last and last[key] == last[key]:
            out[key] = last[key]
    if "knn_accuracy" in first and first["knn_accuracy"] == first["knn_accuracy"]:
        out["knn_accuracy_at_start"] = first["knn_accuracy"]
    for key in ("linear_probe_accuracy", "linear_probe_sd"):
        if run.final.get(key) is not None:
            out[key] = run.final[key]
    return out


def export_model(run_dir: Path, out: Path, *, run: RunData | None = None) -> Path:
    """Write the four files of the module docstring into folder ``out``; return ``out``.

    ``run``: what the model card says of the run (default: read from ``run_dir``; the app
    passes one with the target's name and counts from its database).
    """
    from ie_engine.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    run = run or load_run(run_dir)
    backbone, train_cfg = backbone_from_checkpoint(state)
    size = int(train_cfg["image_size"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), out / "backbone.pt")
    mean = tuple(train_cfg.get("input_mean") or IMAGENET_MEAN)
    std = tuple(train_cfg.get("input_std") or IMAGENET_STD)
    embedder = Embedder(backbone, size, mean=mean, std=std).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        scripted = torch.jit.script(embedder)
        scripted.save(str(out / "embedder.torchscript.pt"))
    with torch.no_grad():
        dim = int(embedder(torch.zeros(1, 3, size, size, dtype=torch.uint8)).shape[1])
    info = {
        "format": "ie-model/1",
        "arch": train_cfg["arch"],
        "base": train_cfg.get("base", "scratch"),
        "base_digest": (state.get("base") or {}).get("digest"),
        "input_mean": list(mean),
        "input_std": list(std),
        "image_size": size,
        "feature_dim": dim,
        "small_image_stem": size <= 48 and str(train_cfg["arch"]).startswith("resnet"),
        "preset": run.config.get("preset"),
        "mode": run.config.get("mode"),
        "seed": run.config.get("seed"),
        "iterations": int(state.get("iteration", run.iterations_done)),
        "training_steps": int(state.get("trainer", {}).get("step", 0)),
        "target": run.target,
        "images_downloaded": len(run.images),
        "images_kept": len(run.kept),
        "figures": _figures(run),
        "files": {name: _sha256(out / name)
                  for name in ("backbone.pt", "embedder.torchscript.pt")},
    }
    (out / "model.json").write_text(json.dumps(info, indent=1))
    (out / "MODEL_CARD.md").write_text(model_card(run, info))
    return out


def usage_snippet(info: dict[str, Any]) -> str:
    """Python that loads both files and embeds one image (run by the tests as written)."""
    stem = ("net.conv1 = torch.nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)\n"
            "net.maxpool = torch.nn.Identity()\n") if info["small_image_stem"] else ""
    if info["arch"] == "effnet-lite0":
        build = ("# or the state dict in timm's EfficientNet-Lite0 (preprocess as the TorchScript "
                 "file does)\nimport timm\n\n"
                 'net = timm.create_model("tf_efficientnet_lite0", pretrained=False, '
                 "num_classes=0)\n")
    else:
        build = (f"# or the state dict in a torchvision {info['arch']} (preprocess as the "
                 f"TorchScript file does)\nnet = torchvision.models.{info['arch']}(weights=None)\n"
                 "net.fc = torch.nn.Identity()\n")
    return f'''import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

image = pil_to_tensor(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)  # uint8 (1, 3, H, W)

# TorchScript: the run's preprocessing included, no project code needed
embedder = torch.jit.load("embedder.torchscript.pt")
with torch.no_grad():
    features = embedder(image)  # (1, {info["feature_dim"]}), unit length

{build}{stem}net.load_state_dict(torch.load("backbone.pt", map_location="cpu"))
net.eval()
'''


def model_card(run: RunData, info: dict[str, Any]) -> str:
    figures = info["figures"]
    target = run.target
    rows = [f"| {k.replace('_', ' ')} | {v:.4f} |" if isinstance(v, float)
            else f"| {k.replace('_', ' ')} | {v} |" for k, v in figures.items()]
    return "\n".join([
        f"# Model card: {run.name}",
        "",
        f"A {info['arch']} image encoder ({info['feature_dim']}-dimensional features, "
        f"{info['image_size']} px input) trained with MoCo v3 self-supervision on a small target "
        "image set and the web images an Internet Explorer run found for it.",
        "",
        "## Training",
        "",
        f"- target: {target.get('name', 'unknown')}"
        + (f", {target['images']} images" if target.get("images") else "")
        + (f", classes {', '.join(target['classes'])} (evaluation only)"
           if target.get("classes") else ""),
        f"- started from the base `{info.get('base', 'scratch')}`"
        + (f" (backbone weights sha256 `{info['base_digest'][:12]}...`)"
           if info.get("base_digest") else ""),
        f"- preset `{info['preset']}`, mode `{info['mode']}`, seed {info['seed']}",
        f"- {info['iterations']} iterations, {info['training_steps']} optimiser steps",
        f"- web images: {info['images_downloaded']} downloaded, {info['images_kept']} kept "
        "in the replay buffer",
        "",
        "## Evaluation",
        "",
        "| figure | value |",
        "|---|---|",
        *(rows or ["| (none recorded: the target had no labels) | - |"]),
        "",
        "kNN and linear-probe accuracy are measured on the target's own labelled sub-folders "
        "when it has them; rewards are mean cosine similarities of web images to the target.",
        "",
        "## Files",
        "",
        *[f"- `{name}` (sha256 `{digest}`)" for name, digest in info["files"].items()],
        "- `model.json`: these facts, machine-readable",
        "",
        "## Use",
        "",
        "```python",
        usage_snippet(info).rstrip(),
        "```",
        "",
        "## Limits",
        "",
        "Trained briefly on a small target and whatever the searched web offered; the features "
        "suit retrieval and probing near the target's domain, not general recognition. The web "
        "images' licenses are listed in the dataset export's manifest.",
        "",
    ])
