"""A full disk: telling it apart from other errors, and the reserve that leaves room to say so.

On one machine the SQLite store, the run folders and their checkpoints share one disk. When it
fills, the worker's own record of the pause ("paused: the disk is full ...") needs a little room
too, and SQLite refuses it with "database or disk is full". So the worker keeps a
:class:`DiskReserve`: a file of ``disk_reserve_mb`` in the data folder, made before a step when
it is missing (and the disk has room for it and as much again), deleted when a step meets a full
disk, so that the pause and its reason can be committed. A step that finds the reserve missing
and no room to make it again stops at once with the same reason: resuming a run on a disk that
is still full pauses it again instead of letting it work until its next checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Final

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``OSError`` numbers that mean the disk (or the user's quota) is full."""
RESERVE_NAME: Final = "disk-reserve"
"""The reserve's file name, directly in the data folder."""
MIB: Final = 1024 * 1024


PG_DISK_FULL: Final = "53100"
"""PostgreSQL's SQLSTATE ``disk_full`` (psycopg raises it as ``psycopg.errors.DiskFull``, an
``OperationalError`` like an unreachable server)."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` means the disk is full: ``ENOSPC``/``EDQUOT``, SQLite's ``SQLITE_FULL``
    ("database or disk is full") or PostgreSQL's ``disk_full`` as SQLAlchemy raises them."""
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE
    if isinstance(exc, DBAPIError):
        return store_disk_full(exc)
    return False


def store_disk_full(exc: DBAPIError) -> bool:
    """Whether the SQL store refused ``exc``'s statement because its disk is full."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(orig, "sqlstate", None) == PG_DISK_FULL


class DiskReserve:
    """A file of ``size`` bytes in ``folder`` (see the module docstring); ``size`` 0: none."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self.path = folder / RESERVE_NAME

    def ensure(self) -> None:
        """Make the reserve when it is missing. ``OSError(ENOSPC)`` when the disk has less
        than twice its size free (nothing is made then) or fills while it is written."""
        if self.size <= 0:
            return
        with suppress(FileNotFoundError):
            if self.path.stat().st_size >= self.size:
                return
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if free < 2 * self.size:
            raise OSError(errno.ENOSPC, f"{free // MIB} MiB free, less than twice the disk "
                                        f"reserve ({self.size // MIB} MiB)", str(self.folder))
        tmp = self.folder / f".{RESERVE_NAME}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                left = self.size
                while left > 0:  # random bytes: a compressing file system keeps them all
                    n = min(left, MIB)
                    fh.write(os.urandom(n))
                    left -= n
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError:
            with suppress(OSError):
                tmp.unlink()
            raise
        log.info("disk reserve of %d MiB made at %s", self.size // MIB, self.path)

    def release(self) -> bool:
        """Delete the reserve (the disk is full); whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: deleted the disk reserve (%d MiB at %s) to record it",
                    self.size // MIB, self.path)
        return True
