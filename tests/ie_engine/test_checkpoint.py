"""Checkpoints are atomic: an interrupted write leaves the previous one loadable."""

from __future__ import annotations

import os

import pytest
import torch

from ie_engine.checkpoint import load_checkpoint, save_checkpoint
from ie_engine.errors import CheckpointError


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"format": 1, "w": torch.arange(5), "it": 3})
    state = load_checkpoint(path)
    assert state["it"] == 3
    assert torch.equal(state["w"], torch.arange(5))


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": 1, "it": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk vanished mid-write")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"format": 1, "it": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["it"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    # A child process is killed while it writes a huge checkpoint; the old one must load.
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": 1, "it": 7})
    pid = os.fork()
    if pid == 0:  # child: start a big write, parent kills it
        try:
            save_checkpoint(path, {"format": 1, "it": 8, "big": torch.zeros(50_000_000)})
        finally:
            os._exit(0)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert load_checkpoint(path)["it"] in (7, 8)  # never a torn file
    for p in tmp_path.iterdir():
        if p.name != "checkpoint.pt":
            p.unlink()  # a temp file may remain after SIGKILL; it is never read


def test_corrupt_or_foreign_files_raise_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_writer_dead_between_its_temp_file_and_the_rename(tmp_path):
    # The child writes and fsyncs the whole temporary file, then dies just before the rename.
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": 1, "it": 4})
    pid = os.fork()
    if pid == 0:
        import ie_engine.checkpoint as ckpt

        ckpt.os.replace = lambda *_: os._exit(9)  # type: ignore[assignment]
        try:
            save_checkpoint(path, {"format": 1, "it": 5})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9
    leftovers = [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert leftovers and leftovers[0].stat().st_size > 0  # the new bytes, never renamed
    assert load_checkpoint(path)["it"] == 4  # the previous checkpoint loads
    save_checkpoint(path, {"format": 1, "it": 5})  # and the next write goes through
    assert load_checkpoint(path)["it"] == 5
