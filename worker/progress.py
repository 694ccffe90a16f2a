"""Progress and cancel checks of a running task, through the store.

:class:`StoreProgress` is the engine's :class:`~ie_engine.types.ProgressSink` for the worker: it
writes the run's phase and counts (``set_run_progress``) and a ``phase`` event
``{phase, done, total, iteration}``, commits and wakes the dashboards - at a phase's start and
end, and at most once per ``interval`` seconds in between, so a fast phase costs few writes.

:class:`StopFlag` is the engine's ``should_stop``: it reads the run's status at most once per
``interval`` seconds, and says stop once a person has cancelled (``cancelling``), so a training
loop that polls it every step stops within about ``interval`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.services.live import publish
from app.settings import Settings
from app.store.events import add_event
from app.store.models import Run, RunStatus
from app.store.runs import set_run_progress

log = logging.getLogger(__name__)


class StoreProgress:
    """Writes throttled progress of run ``run_id`` to the store (see the module docstring)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        run_id: int,
        *,
        iteration: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.run_id = run_id
        self.iteration = iteration
        self.interval = settings.progress_interval_seconds
        self.clock = clock
        self.done: dict[str, int] = {}
        self.total: dict[str, int | None] = {}
        self._last_write: dict[str, float] = {}

    def start(self, phase: str, total: int | None) -> None:
        self.done[phase] = 0
        self.total[phase] = total
        self._write(phase)

    def advance(self, phase: str, n: int = 1) -> None:
        self.done[phase] = self.done.get(phase, 0) + n
        if self.clock() - self._last_write.get(phase, 0.0) >= self.interval:
            self._write(phase)

    def finish(self, phase: str) -> None:
        total = self.total.get(phase)
        if total is not None:
            self.done[phase] = max(self.done.get(phase, 0), total)
        self._write(phase)

    def _write(self, phase: str) -> None:
        """One short transaction: the run's progress and a ``phase`` event."""
        self._last_write[phase] = self.clock()
        done, total = self.done.get(phase, 0), self.total.get(phase)
        try:
            with self.factory() as session:
                set_run_progress(
                    session, self.run_id, iteration=self.iteration, phase=phase[:32],
                    done=done, total=total,
                )
                payload = {"phase": phase, "done": done, "total": total,
                           "iteration": self.iteration}
                add_event(session, self.run_id, "phase", payload)
                session.commit()
        except SQLAlchemyError as exc:  # progress is a courtesy: never fail the work for it
            log.warning("could not record progress of run %s: %s", self.run_id, exc)
            return
        publish(self.run_id, settings=self.settings)


class StopFlag:
    """``should_stop`` for the engine: True once run ``run_id`` is being cancelled."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        run_id: int,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.run_id = run_id
        self.interval = interval
        self.clock = clock
        self._checked_at: float | None = None
        self._stop = False

    def __call__(self) -> bool:
        now = self.clock()
        if self._stop or (self._checked_at is not None and now - self._checked_at < self.interval):
            return self._stop
        self._checked_at = now
        try:
            with self.factory() as session:
                status = session.scalar(select(Run.status).where(Run.id == self.run_id))
        except SQLAlchemyError as exc:
            log.warning("could not read the status of run %s: %s", self.run_id, exc)
            return False
        self._stop = status is None or RunStatus(status) in (
            RunStatus.CANCELLING, RunStatus.CANCELLED,
        )
        return self._stop
