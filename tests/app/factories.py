"""Builders of test data: real image bytes, hostile files, zip archives, store rows."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from app.store.models import Run, Upload
from app.store.runs import create_run, set_run_status
from app.store.uploads import create_upload


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), seed: int = 0) -> bytes:
    """A small real image of random pixels in ``fmt`` (PNG, JPEG, GIF, WEBP, BMP)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(size[0] * size[1])
        ]
    )
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming ``width`` x ``height`` with almost no pixel data.

    Decoding it would allocate width*height*3 bytes: a decompression bomb's signature.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """The first half of a real PNG of noise (a download cut short)."""
    data = image_bytes("PNG", size=(64, 64), seed=7)
    return data[: len(data) // 2]


HTML_PAGE = b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"


@dataclass(frozen=True)
class ZipEntry:
    """One entry of a test archive; ``symlink`` marks it as a Unix symbolic link."""

    name: str
    data: bytes
    symlink: bool = False


def zip_bytes(entries: Iterable[ZipEntry]) -> bytes:
    """A zip archive (deflated) of ``entries``, names written exactly as given."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # a repeated name is on purpose here
        for entry in entries:
            info = zipfile.ZipInfo(entry.name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the mode bits mean what they say
            mode = 0o120777 if entry.symlink else 0o100644
            info.external_attr = mode << 16
            zf.writestr(info, entry.data)
    return out.getvalue()


def make_upload(session: Session, **overrides: Any) -> Upload:
    """An upload row (no files on disk)."""
    return create_upload(session, name=overrides.pop("name", "test upload"), **overrides)


def make_run(session: Session, *, name: str = "run", with_upload: bool = True) -> Run:
    """A draft run, on a fresh upload unless ``with_upload`` is False."""
    upload_id = make_upload(session).id if with_upload else None
    return create_run(session, name=name, config={"iterations": 3, "seed": 0}, upload_id=upload_id)


def make_running_run(session: Session, *, name: str = "run", accepted: int = 5) -> Run:
    """A run on an upload with ``accepted`` images, moved through ``queued`` to ``running``."""
    upload = make_upload(session)
    upload.n_accepted = accepted
    run = create_run(session, name=name, config={"iterations": 3, "seed": 0}, upload_id=upload.id)
    set_run_status(session, run.id, "queued")
    set_run_status(session, run.id, "running")
    return run


def concept_rows(n: int, *, seed: int = 0, mapped: bool = True) -> list[dict[str, Any]]:
    """``n`` concepts as the worker upserts them: figures drawn from ``seed``, some missing,
    ties on purpose (``mu`` to one decimal, ``times_queried`` 0-3), lowercase lemmas."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows: list[dict[str, Any]] = []
    for i in range(n):
        lemma = "".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) + letters[i % 26]
        rows.append(
            {
                "index": i,
                "lemma": f"{lemma}{i:03d}" if i % 7 == 0 else lemma,
                "text": f"{lemma.upper()} (noun): thing number {i}",
                "source": "wordnet",
                "mu": None if i % 11 == 0 else round(rng.uniform(-1, 1), 1),
                "sigma": rng.uniform(0, 1),
                "probability": rng.uniform(0, 0.1),
                "tier": i % 3,
                "times_queried": rng.randint(0, 3),
                "observed_reward_mean": None if i % 5 == 0 else rng.uniform(0, 1),
                "map_x": rng.uniform(-5, 5) if mapped else None,
                "map_y": rng.uniform(-5, 5) if mapped else None,
            }
        )
    return rows


def image_row(run_id: int, key: str, **fields: Any) -> dict[str, Any]:
    """An image record as the worker stores it (``path`` relative to ``data_dir``)."""
    return {
        "iteration": 1,
        "concept_index": 0,
        "path": f"runs/{run_id}/images/{key}.png",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "title": f"image {key}",
        **fields,
    }


def write_image(data_dir: Path, relative: str, seed: int = 0) -> bytes:
    """A real PNG written at ``data_dir/relative``; returns its bytes."""
    data = image_bytes("PNG", seed=seed)
    path = data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
