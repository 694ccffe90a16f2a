"""The application's exception tree, mapped to HTTP statuses in one place (``app.main``).

Every error the store and the services raise on purpose derives from :class:`AppError`::

    AppError                    400  base class; ``message`` is shown to the person as it is
    ├── LoginRequired           401  no credentials, or wrong ones (see :mod:`app.access`)
    ├── CsrfRefused             403  a state-changing request without its session's CSRF token
    ├── NotFound                404  a run, upload or concept id that does not exist
    ├── Conflict                409  the request contradicts the current state
    │   └── IllegalTransition   409  a run status change the state machine forbids
    └── InvalidInput            400  the request itself is unusable
        └── UploadRefused       400  a whole upload was refused (empty, not a zip, a zip bomb,
            │                        no image accepted); per-file refusals are *recorded* in the
            │                        upload's report, never raised
            └── UploadTooLarge  413  the request body is over ``max_upload_bytes``

This module imports nothing from FastAPI: the store raises these errors and the worker imports
the store.
"""

from __future__ import annotations


class AppError(Exception):
    """Base class of every error the application raises on purpose."""

    status_code: int = 400

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[str] = list(details or [])
        """Extra lines shown under the message (for example why each file was refused)."""


class LoginRequired(AppError):
    """The request carries no valid session cookie or access token."""

    status_code = 401


class CsrfRefused(AppError):
    """A state-changing request from a logged-in browser lacks its session's CSRF token."""

    status_code = 403


class NotFound(AppError):
    """The named row does not exist."""

    status_code = 404


class Conflict(AppError):
    """The request contradicts the current state of a row."""

    status_code = 409


class IllegalTransition(Conflict):
    """A run status change that the run state machine does not allow."""

    def __init__(self, run_id: int, current: str, requested: str, allowed: list[str]) -> None:
        choices = ", ".join(allowed) if allowed else "none (the run has ended)"
        super().__init__(
            f"run {run_id} cannot go from {current!r} to {requested!r}; allowed from "
            f"{current!r}: {choices}"
        )
        self.run_id = run_id
        self.current = current
        self.requested = requested


class InvalidInput(AppError):
    """The request is unusable as sent."""


class UploadRefused(InvalidInput):
    """A whole upload was refused; nothing of it was kept."""


class UploadTooLarge(UploadRefused):
    """The request body is larger than the configured cap."""

    status_code = 413


__all__ = [
    "AppError",
    "Conflict",
    "CsrfRefused",
    "IllegalTransition",
    "InvalidInput",
    "LoginRequired",
    "NotFound",
    "UploadRefused",
    "UploadTooLarge",
]
