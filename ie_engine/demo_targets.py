"""Ready-made target folders built from Debian's image packages (demos and benchmarks).

A target is a folder with one subfolder per class; the class names are for evaluation only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ie_engine.errors import TargetError

TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")

DEMO_CLASSES: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "fruit": ("food/fruit",),
    "flower": ("plants/flowers",),
    "vegetable": ("food/vegetables",),
}
"""The demo: photographs of birds, fruit, flowers and vegetables from Tux Paint's stamps."""


def tuxpaint_photos(root: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Tux Paint stamp PNGs under any of ``prefixes``, leaving out ``cartoon/`` drawings."""
    out: list[Path] = []
    for prefix in prefixes:
        base = root / prefix
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.png")):
            rel = path.relative_to(root)
            if "cartoon" in rel.parts or path.name.endswith("_mirror.png"):
                continue
            out.append(path)
    return out


def make_tuxpaint_target(
    out: Path,
    *,
    classes: dict[str, tuple[str, ...]] = DEMO_CLASSES,
    root: Path = TUXPAINT_ROOT,
) -> dict[str, int]:
    """Copy each class's photographs into ``out/<class>/``; return the count per class.

    Idempotent: an existing file is left alone. Raises TargetError when the package is missing.
    """
    if not root.is_dir():
        raise TargetError(
            f"{root} not found: install Tux Paint's stamps "
            "(apt-get install tuxpaint-stamps-default)"
        )
    counts: dict[str, int] = {}
    for name, prefixes in classes.items():
        files = tuxpaint_photos(root, prefixes)
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        for path in files:
            rel = path.relative_to(root)
            target = dest / "_".join(rel.parts)
            if not target.exists():
                tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)
        counts[name] = len(files)
    return counts
