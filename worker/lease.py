"""A run's lease: one worker process at a time works on a run.

A step that is about to do the engine's work takes the run's lease on the locked row
(``runs.worker_id``, ``runs.lease_until``) and keeps it alive from a background thread while it
works; it gives it back in the transaction that stores its results, before it sends the next
task. A second delivery of a message (the broker's visibility timeout ran out while the first
still ran, or a person's "resume" raced a redelivery) finds the lease held and is put off with
:class:`Held`; once the holder is done, the retry finds the work stored and repeats nothing.

A worker process killed with SIGKILL renews nothing: its lease runs out after
:func:`lease_seconds`, and the redelivered message then takes the run from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Final

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from app.store.models import Run, utcnow

log = logging.getLogger(__name__)

LEASE_POLLS: Final = 10
"""A lease lasts this many stop polls (``stop_poll_seconds``) unless renewed."""
MIN_LEASE_SECONDS: Final = 2.0


class Held(Exception):
    """Another worker holds the run's lease: try again in ``retry_in`` seconds."""

    def __init__(self, run_id: int, holder: str, retry_in: float) -> None:
        super().__init__(f"run {run_id} is held by {holder} for {retry_in:.1f} s more")
        self.retry_in = retry_in


def lease_seconds(settings: Settings) -> float:
    """How long a lease lasts without renewal."""
    return max(MIN_LEASE_SECONDS, LEASE_POLLS * settings.stop_poll_seconds)


def new_token() -> str:
    """A holder name unique to one claim: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:255]


def take(run: Run, token: str, seconds: float) -> None:
    """Take the lease of ``run`` (a row locked by the caller's transaction); :class:`Held`
    when another holder's lease has not run out."""
    now = utcnow()
    if run.worker_id and run.worker_id != token and run.lease_until is not None \
            and run.lease_until > now:
        raise Held(run.id, run.worker_id, (run.lease_until - now).total_seconds())
    run.worker_id = token
    run.lease_until = now + timedelta(seconds=seconds)


def release(session: Session, run_id: int, token: str) -> None:
    """Give the lease back inside the caller's transaction (only if ``token`` holds it)."""
    session.execute(
        update(Run).where(Run.id == run_id, Run.worker_id == token)
        .values(worker_id=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


class Renewer:
    """Renews a lease every third of its length from a daemon thread until :meth:`stop`."""

    def __init__(self, factory: sessionmaker[Session], run_id: int, token: str,
                 seconds: float) -> None:
        self.factory = factory
        self.run_id = run_id
        self.token = token
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{run_id}", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.seconds)

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                with self.factory() as session:
                    session.execute(
                        update(Run).where(Run.id == self.run_id, Run.worker_id == self.token)
                        .values(lease_until=utcnow() + timedelta(seconds=self.seconds))
                        .execution_options(synchronize_session=False)
                    )
                    session.commit()
            except SQLAlchemyError as exc:  # the store is away: the step itself will notice
                log.warning("could not renew the lease of run %s: %s", self.run_id, exc)
