"""Fixtures of the browser tests: the worker tests' world (a corpus server and a target)."""

from tests.worker.conftest import world

__all__ = ["world"]
