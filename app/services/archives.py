"""Zip archives: each entry judged before a byte of it is written, then extracted one by one.

An archive is refused whole when it is not a zip, when it has more entries than ``max_files``,
or when its entries claim more than ``max_upload_bytes`` uncompressed in all (a zip bomb by
volume). Otherwise each entry is judged alone, and a bad one is refused with a reason while the
rest are kept:

* names: absolute paths, ``..`` components (zip slip) and hidden files are refused
  (:func:`app.services.filenames.split_given_path`); a name seen twice is refused the second
  time;
* symbolic links (Unix mode in ``external_attr``) and encrypted entries are refused;
* an entry over ``max_file_bytes`` is ``too-large``; one that inflates more than
  ``max_zip_ratio`` times to more than :data:`RATIO_FLOOR_BYTES` is a ``zip-bomb``;
* the declared sizes are not trusted: extraction stops at the cap whatever the header said,
  and a corrupt stream (bad CRC, bad deflate data) is ``corrupt``.

Entries are written under made-up names in the staging folder; names from the archive are never
used as paths (``ZipFile.extract`` is not used).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.errors import UploadRefused
from app.services.filenames import path_key, split_given_path
from app.services.staging import FileRefused, StagedFile, copy_capped

RATIO_FLOOR_BYTES: Final = 1024 * 1024
"""Entries smaller than this are never zip bombs, whatever their ratio (a flat 200 KB BMP
deflates 500 times and is harmless)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """The caps an archive is held to (from the settings)."""

    max_entries: int
    max_total_bytes: int
    max_file_bytes: int
    max_ratio: float


def _judge(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    """Raise :class:`FileRefused` when the entry must not be extracted."""
    split_given_path(info.filename)
    if stat.S_ISLNK(info.external_attr >> 16):  # the Unix mode sits in the high 16 bits
        raise FileRefused("symlink", "symbolic links are not followed or kept")
    if info.flag_bits & 0x1:
        raise FileRefused("encrypted", "the entry is encrypted")
    if info.file_size > limits.max_file_bytes:
        raise FileRefused(
            "too-large",
            f"the entry is {info.file_size:,} bytes, over the limit of {limits.max_file_bytes:,}",
        )
    if info.file_size > RATIO_FLOOR_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise FileRefused(
                "zip-bomb",
                f"the entry inflates {ratio:,.0f} times ({info.compress_size:,} -> "
                f"{info.file_size:,} bytes), over the limit of {limits.max_ratio:,.0f}",
            )


def expand_zip(archive: Path, staging: Path, limits: ArchiveLimits) -> list[StagedFile]:
    """Judge and extract the entries of ``archive`` into ``staging``; one result per file entry.

    Directory entries are skipped. Raises :class:`UploadRefused` when the archive as a whole is
    refused (see the module docstring).
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRefused("the archive is not a readable zip file") from exc
    with zf:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        if len(entries) > limits.max_entries:
            raise UploadRefused(
                f"the archive has {len(entries):,} files, over the limit of {limits.max_entries:,}"
            )
        declared = sum(i.file_size for i in entries)
        if declared > limits.max_total_bytes:
            raise UploadRefused(
                f"the archive would inflate to {declared:,} bytes, over the limit of "
                f"{limits.max_total_bytes:,} (a zip bomb?); nothing was extracted"
            )
        staging.mkdir(parents=True, exist_ok=True)
        results: list[StagedFile] = []
        seen: set[str] = set()
        for n, info in enumerate(entries):
            results.append(_extract_one(zf, info, staging / f"{n:06d}.part", limits, seen))
        return results


def _extract_one(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    destination: Path,
    limits: ArchiveLimits,
    seen: set[str],
) -> StagedFile:
    """Extract one entry under a made-up name, or say why not."""
    try:
        _judge(info, limits)
        key = path_key(split_given_path(info.filename))
        if key in seen:
            raise FileRefused("duplicate-path", "the archive holds another file of this name")
        seen.add(key)
        cap = min(limits.max_file_bytes, info.file_size)
        try:
            with zf.open(info) as source:
                size = copy_capped(source, destination, cap)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            destination.unlink(missing_ok=True)
            raise FileRefused("corrupt", f"the entry cannot be extracted: {exc}") from exc
    except FileRefused as refusal:
        return StagedFile(info.filename, None, info.file_size, "archive", refusal)
    return StagedFile(info.filename, destination, size, "archive")
