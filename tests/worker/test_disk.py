"""The disk reserve and the test for a full disk (:mod:`worker.disk`)."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

import worker.disk
from worker.disk import MIB, DiskReserve, disk_full

Usage = namedtuple("Usage", "total used free")


def test_full_disk_errors_are_told_apart() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError("no"))
    engine = create_engine("sqlite://")
    with engine.connect() as conn:  # a real SQLITE_FULL: the database may not grow
        conn.execute(text("CREATE TABLE t (x BLOB)"))
        conn.execute(text("PRAGMA max_page_count = 3"))
        with pytest.raises(OperationalError) as full:
            conn.execute(text("INSERT INTO t VALUES (zeroblob(100000))"))
        with pytest.raises(OperationalError) as other:
            conn.execute(text("SELECT * FROM missing"))
    assert "database or disk is full" in str(full.value)
    assert disk_full(full.value)
    assert not disk_full(other.value)


def test_postgresql_disk_full_is_told_apart_from_an_unreachable_server() -> None:
    import psycopg

    # psycopg's own classes: a server whose disk is full answers SQLSTATE 53100.
    full = OperationalError("INSERT ...", {}, psycopg.errors.DiskFull(
        "could not extend file \"base/16384/16385\": No space left on device"))
    down = OperationalError("SELECT 1", {}, psycopg.OperationalError(
        "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused"))
    assert psycopg.errors.DiskFull.sqlstate == "53100"
    assert disk_full(full)
    assert not disk_full(down)
    assert not disk_full(OperationalError("SELECT 1", {}, psycopg.errors.QueryCanceled("x")))


def test_the_reserve_is_made_once_and_released(tmp_path) -> None:
    reserve = DiskReserve(tmp_path / "data", 2 * MIB)
    reserve.ensure()
    assert reserve.path.stat().st_size == 2 * MIB
    made = reserve.path.stat().st_mtime_ns
    reserve.ensure()  # there already: left as it is
    assert reserve.path.stat().st_mtime_ns == made
    assert reserve.release() and not reserve.path.exists()
    assert not reserve.release()
    assert list((tmp_path / "data").iterdir()) == []
    DiskReserve(tmp_path / "none", 0).ensure()  # size 0: no reserve
    assert not (tmp_path / "none" / worker.disk.RESERVE_NAME).exists()


def test_no_reserve_without_room_for_it_twice(tmp_path, monkeypatch) -> None:
    reserve = DiskReserve(tmp_path, 4 * MIB)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(100 * MIB, 93 * MIB, 7 * MIB))
    with pytest.raises(OSError) as refused:
        reserve.ensure()
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(tmp_path)
    assert "7 MiB free" in str(refused.value) and disk_full(refused.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(100 * MIB, 92 * MIB, 8 * MIB))
    reserve.ensure()
    assert reserve.path.stat().st_size == 4 * MIB
