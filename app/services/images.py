"""Serving a run's downloaded images from the data folder, and nothing else from it.

An image row's ``path`` is relative to ``data_dir``, written by the worker. It is served only if
it resolves (links followed) to a regular file with an image extension *inside* ``data_dir``: a
path with ``..``, an absolute path or a link pointing elsewhere is refused as if missing, so a
bad row can never expose the database or any other file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy.orm import Session

from app.errors import NotFound
from app.settings import Settings
from app.store.images import get_image

SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
"""File extensions that may be served."""


def resolve_data_file(data_dir: Path, relative: str) -> Path | None:
    """``relative`` resolved under ``data_dir``, or None when it leaves it, is not a regular
    file or is not an image by its extension."""
    if not relative or "\x00" in relative:
        return None
    candidate = data_dir / relative  # an absolute ``relative`` replaces data_dir: caught below
    try:
        resolved = candidate.resolve(strict=True)  # links followed, once
        root = data_dir.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a loop of links, unreadable
        return None
    if not resolved.is_relative_to(root) or resolved == root:
        return None
    if resolved.suffix.lower() not in SUFFIXES or not resolved.is_file():
        return None
    return resolved


def image_file(session: Session, settings: Settings, run_id: int, image_id: int) -> Path:
    """The file of image ``image_id`` of run ``run_id``; :class:`NotFound` when there is no
    such image or its file may not be served."""
    image = get_image(session, run_id, image_id)
    path = resolve_data_file(settings.data_dir, image.path) if image is not None else None
    if path is None:
        raise NotFound(f"run {run_id} has no image {image_id} to show")
    return path
