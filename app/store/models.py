"""The SQL store's tables, as typed SQLAlchemy 2 models.

The store is the source of truth for runs, uploads, iterations, concepts, queries, images, vetoes
and events (DESIGN.md), and for the browser sessions ended by logging out. Types are chosen
to behave the same on SQLite and PostgreSQL:

* JSON columns are ``JSON`` (``JSONB`` on PostgreSQL); values are written through
  :func:`app.store.values.clean_json`, so NaN never reaches PostgreSQL (which refuses it);
* times are timezone-aware UTC on the way in *and* out (:class:`UtcDateTime`), although SQLite
  stores them without a zone;
* statuses are short strings with a CHECK constraint (no PostgreSQL enum types to migrate);
* constraint names follow :data:`NAMING`, so migrations can drop them by name.

Concept indices are called ``concept_index`` in every table (the ``index`` of a concept in the
run's vocabulary), so joins read the same everywhere.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint naming convention (the same names on every database, needed to drop them)."""

JsonDoc = JSON().with_variant(JSONB(), "postgresql")
"""A JSON document column: ``JSON`` text on SQLite, ``JSONB`` on PostgreSQL."""

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit key; on SQLite it must be ``INTEGER`` to be the rowid alias (autoincrement)."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind of time the store holds)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps the zone (``timestamptz``); SQLite drops it, so values read back from SQLite
    get UTC attached. Naive values are refused on the way in: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store holds UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RunStatus(enum.StrEnum):
    """Where a run is in its life (transitions: :data:`app.store.runs.TRANSITIONS`)."""

    DRAFT = "draft"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FINISHED = "finished"
    FAILED = "failed"


class FileStatus(enum.StrEnum):
    """Whether an uploaded file became a target image."""

    ACCEPTED = "accepted"
    REFUSED = "refused"


class VetoAction(enum.StrEnum):
    """What a person asked of the policy."""

    VETO = "veto"
    UNVETO = "unveto"
    ADD = "add"


def _str_enum(klass: type[enum.StrEnum], name: str) -> Enum:
    """A VARCHAR column with a CHECK constraint holding the enum's values (not its names)."""
    return Enum(
        klass,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda k: [m.value for m in k],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base of every table; carries the naming convention."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonDoc,
        list[Any]: JsonDoc,
        datetime: UtcDateTime,
    }


class Upload(Base):
    """A folder of the person's images (the target of a run), stored under ``folder``."""

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    """What the person uploaded: the folder's or the archive's name."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    folder: Mapped[str] = mapped_column(String(255), default="")
    """Where the accepted files are, relative to ``data_dir`` (``uploads/{id}``)."""
    n_accepted: Mapped[int] = mapped_column(default=0)
    n_refused: Mapped[int] = mapped_column(default=0)
    class_names: Mapped[list[Any]] = mapped_column(default=list)
    """Class names for label-set mode: given by the person, or the labelled sub-folders."""
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    """True when every accepted file carries a label (its first-level sub-folder)."""


class UploadFile(Base):
    """One file of an upload, accepted or refused, with the reason."""

    __tablename__ = "upload_files"
    __table_args__ = (Index("ix_upload_files_upload_id_status", "upload_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    """The path as uploaded (a browser's relative path, or the zip entry's name)."""
    stored_path: Mapped[str | None] = mapped_column(Text)
    """Where it was stored, relative to the upload's folder; None when refused."""
    status: Mapped[FileStatus] = mapped_column(_str_enum(FileStatus, "file_status"))
    reason: Mapped[str | None] = mapped_column(String(32))
    """A short stable code when refused (``not-an-image``, ``zip-slip``, ``too-large`` ...)."""
    detail: Mapped[str | None] = mapped_column(Text)
    """A human sentence saying why."""
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    width: Mapped[int | None]
    height: Mapped[int | None]
    label: Mapped[str | None] = mapped_column(String(255))


class Run(Base):
    """One exploration run: its configuration, status and live progress."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[RunStatus] = mapped_column(
        _str_enum(RunStatus, "run_status"), default=RunStatus.DRAFT
    )
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The engine's ``ExplorerConfig.to_dict()``."""
    upload_id: Mapped[int | None] = mapped_column(
        ForeignKey("uploads.id", ondelete="RESTRICT")
    )
    """The target images; required before the run can be queued."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    iteration: Mapped[int] = mapped_column(default=0)
    """The iteration in progress (or the last one finished)."""
    phase: Mapped[str | None] = mapped_column(String(32))
    """The phase in progress (``search``, ``download``, ``train`` ...)."""
    phase_done: Mapped[int | None]
    phase_total: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    """Why the run failed, in words."""
    worker_id: Mapped[str | None] = mapped_column(String(255))
    """The worker that holds the run's lease."""
    lease_until: Mapped[datetime | None]
    """The lease runs out at this time unless the worker renews it."""
    heartbeat_at: Mapped[datetime | None]
    """When the worker last said it was alive."""
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A person asked the run to pause: the worker finishes the iteration in progress, then
    sets ``paused`` (which clears this flag). The status stays ``running`` until then."""
    search_engine: Mapped[str] = mapped_column(
        String(32), default="offline", server_default="offline"
    )
    """The image web the worker searches: ``offline`` is the built-in corpus on loopback,
    ``web`` the engines of ``engine_config``."""
    engine_config: Mapped[dict[str, Any] | None]
    """The web engines' configuration (``EnginesConfig.to_dict()`` of the chosen engines, no
    keys); None for the offline web."""
    licenses: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    """License codes a web result must carry to be downloaded; empty: any license."""
    engine_health: Mapped[dict[str, Any] | None]
    """Each web engine's health as the worker last saw it (``SpreadHealth.as_dict()``)."""


class Iteration(Base):
    """What one iteration of a run did (the engine's ``IterationSummary`` less the queries)."""

    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="finished")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    model: Mapped[str] = mapped_column(String(32), default="")
    """The policy's model this iteration (``uniform``, ``gp``, ``ridge``)."""
    mean_image_reward: Mapped[float | None] = mapped_column(Float)
    mean_concept_reward: Mapped[float | None] = mapped_column(Float)
    loss_mean: Mapped[float | None] = mapped_column(Float)
    knn_accuracy: Mapped[float | None] = mapped_column(Float)
    """kNN accuracy on the target when it is labelled; None otherwise."""
    seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Seconds per phase."""
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """n_results, n_images, n_failures, failure_reasons, n_leaked, replay_size ..."""
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Any further figure the engine reports."""


class Concept(Base):
    """One concept of a run's vocabulary, with the policy's latest view of it."""

    __tablename__ = "concepts"
    __table_args__ = (
        UniqueConstraint("run_id", "concept_index"),
        Index("ix_concepts_run_id_observed_reward_mean", "run_id", "observed_reward_mean"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    concept_index: Mapped[int]
    lemma: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), default="wordnet")
    mu: Mapped[float | None] = mapped_column(Float)
    sigma: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    tier: Mapped[int | None]
    times_queried: Mapped[int] = mapped_column(default=0)
    observed_reward_mean: Mapped[float | None] = mapped_column(Float)
    vetoed: Mapped[bool] = mapped_column(Boolean, default=False)
    map_x: Mapped[float | None] = mapped_column(Float)
    map_y: Mapped[float | None] = mapped_column(Float)
    """Where the concept sits on the dashboard's concept map (a 2-D projection of its text
    embedding, written by the worker); None until then."""


class Query(Base):
    """One search query sent in an iteration, with the prediction and what it brought."""

    __tablename__ = "queries"
    __table_args__ = (
        Index("ix_queries_run_id_iteration", "run_id", "iteration"),
        Index("ix_queries_run_id_concept_index", "run_id", "concept_index"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int]
    concept_index: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    descriptor: Mapped[str | None] = mapped_column(String(64))
    mu: Mapped[float | None] = mapped_column(Float)
    sigma: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    tier: Mapped[int | None]
    n_results: Mapped[int] = mapped_column(default=0)
    n_images: Mapped[int] = mapped_column(default=0)
    observed_reward: Mapped[float | None] = mapped_column(Float)


class Image(Base):
    """A web image a run downloaded, with provenance and reward."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("run_id", "sha256"),
        Index("ix_images_run_id_concept_index", "run_id", "concept_index"),
        Index("ix_images_run_id_iteration", "run_id", "iteration"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int]
    concept_index: Mapped[int]
    query: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(Text)
    """The stored file, relative to ``data_dir``."""
    sha256: Mapped[str] = mapped_column(String(64))
    dhash: Mapped[str] = mapped_column(String(16), default="")
    image_url: Mapped[str] = mapped_column(Text, default="")
    page_url: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str] = mapped_column(String(255), default="")
    creator: Mapped[str] = mapped_column(Text, default="")
    engine: Mapped[str] = mapped_column(String(64), default="")
    category: Mapped[str] = mapped_column(String(255), default="")
    reward: Mapped[float | None] = mapped_column(Float)
    kept: Mapped[bool] = mapped_column(Boolean, default=False)
    """Entered the replay buffer."""


class Veto(Base):
    """A person's request to the policy: veto or unveto a concept, or add one."""

    __tablename__ = "vetoes"
    __table_args__ = (
        Index("ix_vetoes_run_id_applied", "run_id", "applied"),
        CheckConstraint(
            "(action = 'add' AND phrase IS NOT NULL) OR "
            "(action <> 'add' AND concept_index IS NOT NULL)",
            name="target",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    concept_index: Mapped[int | None]
    action: Mapped[VetoAction] = mapped_column(_str_enum(VetoAction, "veto_action"))
    phrase: Mapped[str | None] = mapped_column(String(255))
    """The new concept's phrase (``add`` only)."""
    iteration: Mapped[int] = mapped_column(default=0)
    """The run's iteration when the request was made."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    """The worker has handed it to the policy."""
    applied_at: Mapped[datetime | None]


class Event(Base):
    """Something that happened to a run; ``id`` is the SSE ``Last-Event-ID``.

    ``sqlite_autoincrement`` keeps SQLite from reusing the id of a deleted last row, so an id seen
    by a browser is never given to a later event.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_run_id_id", "run_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RevokedSession(Base):
    """A browser session ended by logging out: its cookie is refused from then on.

    Keyed by the SHA-256 of the session's CSRF token (unique per session; the token itself is not
    kept). The row is needed only while the cookie could still be accepted, that is until
    ``issued_at`` is older than ``IE_SESSION_HOURS``; the issue time is stored rather than an
    expiry, so a longer ``IE_SESSION_HOURS`` set later keeps the row as long as the cookie lives.
    """

    __tablename__ = "revoked_sessions"
    __table_args__ = (Index("ix_revoked_sessions_issued_at", "issued_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Hex SHA-256 of the session's CSRF token."""
    issued_at: Mapped[datetime]
    """When the session's cookie was issued."""
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
