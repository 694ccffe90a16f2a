"""Runs as a person drives them: launch one, pause it, resume it, cancel it.

Each use-case changes the store, commits, then tells the rest of the system: the worker through
:func:`enqueue_next` (only after the commit, so the worker finds what it is told about) and open
dashboards through :func:`app.services.live.publish`.

What the controls do, by the run's status (anything else is a 409, saying what is allowed)::

    action   status                 becomes
    pause    queued                 paused (no worker holds it yet)
             running                running with ``pause_requested``; the worker finishes the
                                    iteration in progress, then sets ``paused``
             paused, or asked       unchanged (a second click)
    resume   draft, paused, failed  queued, and enqueued (failed: from the last checkpoint)
             pause asked            the request is withdrawn; the run keeps running
             queued                 unchanged (a second click)
    cancel   draft, paused          cancelled (no worker holds it)
             queued, running        cancelling (a pending pause is dropped); the worker stops
                                    and sets ``cancelled``
             cancelling, cancelled  unchanged (a second click)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, cast

from sqlalchemy.orm import Session

from app.errors import Conflict, IllegalTransition, InvalidInput
from app.numbers import ID_MAX, whole_number
from app.services.engines import EngineChoice, EngineOptions, parse_engine_choice
from app.services.live import publish
from app.services.uploads import parse_class_names
from app.settings import Settings, get_settings
from app.store.models import Run, RunStatus
from app.store.runs import (
    TRANSITIONS,
    create_run,
    get_run,
    request_pause,
    set_run_status,
    withdraw_pause,
)
from app.store.uploads import get_upload
from ie_engine.bases import BaseStatus, latest_offline_ssl, list_bases, named_base_config
from ie_engine.config import Preset, make_config
from ie_engine.errors import ConfigError, VocabularyError
from ie_engine.vocabulary.wordnet import resolve_synsets

log = logging.getLogger(__name__)
S = RunStatus
Action = Literal["pause", "resume", "cancel"]

PRESETS: Final[tuple[Preset, ...]] = ("cpu-small", "gpu-paper")
"""Presets a person may launch from the web (``tiny`` is for tests of the engine)."""
BOUNDS: Final = {
    "iterations": (1, 1000),
    "queries_per_iteration": (1, 10_000),
    "images_per_query": (1, 1000),
    "seed": (0, 2**31 - 1),
}
"""Smallest and largest value of each whole-number field of the launch form."""
MAX_ROOTS: Final = 50
"""The most WordNet synsets the launch form's ``roots`` may name."""
MAX_ROOTS_CHARS: Final = 2000
"""The longest ``roots`` field the launch form reads."""
ROOTS_LABEL: Final = "only concepts under"


def enqueue_next(
    run_id: int,
    *,
    settings: Settings | None = None,
    step: Literal["fetch", "learn"] = "fetch",
) -> None:
    """Hand run ``run_id`` to the worker. Call only after the transaction that queued it has
    committed (the worker must find what it is told about).

    Sends the run's id, nothing more, by task name (the app never imports the worker's tasks,
    nor torch). ``fetch`` (queue ``io``) with no iteration means "take the run's next step":
    the worker reads the run's checkpoint and, when an iteration's fetched half is already
    there (a run paused or failed between the two halves), hands it on to ``learn`` (queue
    ``gpu``) without fetching again. ``learn`` sends the compute half of the pending iteration
    directly.
    """
    from worker.celery_app import FETCH_TASK, LEARN_TASK, celery_for

    name = FETCH_TASK if step == "fetch" else LEARN_TASK
    try:
        celery_for(settings or get_settings()).send_task(name, args=[run_id, None])
    except Exception as exc:  # the broker is down: the run stays queued in the store
        log.warning("could not hand run %s to the worker (%s); a worker's start-up scan "
                    "will find it", run_id, exc)


# -- launching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """What the launch form asked for; the numbers left empty take the preset's values."""

    upload_id: int
    name: str
    search_engine: str
    preset: Preset
    iterations: int | None
    queries_per_iteration: int | None
    images_per_query: int | None
    seed: int
    class_names: tuple[str, ...]
    engines: EngineChoice = field(default_factory=EngineChoice)
    """The web engines and license filter (the offline web by default)."""
    roots: tuple[str, ...] = ()
    """WordNet synsets the vocabulary is restricted to (empty: every noun)."""
    base: str | None = None
    """Where the backbone starts (``ie_engine.bases``; None: the preset's own)."""

    def config(self) -> dict[str, object]:
        """The run's ``ExplorerConfig.to_dict()``; :class:`InvalidInput` if the engine refuses."""
        try:
            cfg = make_config(self.preset, seed=self.seed)
            cfg = replace(
                cfg,
                iterations=self.iterations or cfg.iterations,
                policy=replace(
                    cfg.policy,
                    queries_per_iteration=self.queries_per_iteration
                    or cfg.policy.queries_per_iteration,
                ),
                search=replace(
                    cfg.search,
                    results_per_query=self.images_per_query or cfg.search.results_per_query,
                ),
                vocabulary=replace(cfg.vocabulary, class_names=self.class_names,
                                   roots=self.roots),
            ).validate()
            if self.base is not None:
                cfg = named_base_config(cfg, self.base)
        except ConfigError as exc:
            raise InvalidInput(f"the engine refuses this configuration: {exc}") from exc
        return cfg.to_dict()


def _whole_number(form: Mapping[str, str], field: str, errors: list[str]) -> int | None:
    """The field as an int within :data:`BOUNDS` (None when empty); a problem goes to errors."""
    text = form.get(field, "").strip()
    if not text:
        return None
    low, high = BOUNDS[field]
    label = field.replace("_", " ")
    try:
        value = int(text)
    except ValueError:
        errors.append(f"{label}: {text[:40]!r} is not a whole number")
        return None
    if not low <= value <= high:
        errors.append(f"{label}: {value} is out of range ({low} to {high})")
        return None
    return value


def parse_roots(text: str, errors: list[str]) -> tuple[str, ...]:
    """The WordNet synsets of the launch form's ``roots`` field (comma- or space-separated,
    repeats out), each checked against the installed WordNet; a problem goes to errors."""
    if len(text) > MAX_ROOTS_CHARS:
        errors.append(f"{ROOTS_LABEL}: at most {MAX_ROOTS_CHARS:,} characters")
        return ()
    # Names are read as NLTK reads them, case aside: "Bird.n.01" is bird.n.01.
    roots = tuple(dict.fromkeys(name.lower() for name in re.split(r"[,\s]+", text) if name))
    if len(roots) > MAX_ROOTS:
        errors.append(f"{ROOTS_LABEL}: at most {MAX_ROOTS} synsets")
        return ()
    if roots:
        try:
            resolve_synsets(roots)
        except (ConfigError, VocabularyError) as exc:
            errors.append(f"{ROOTS_LABEL}: {exc}")
            return ()
    return roots


def base_choices(settings: Settings) -> list[BaseStatus]:
    """The bases the launch form offers, each with whether the workers have its weights (they
    share the app's data folder) and, when not, what to put where."""
    data_dir = settings.data_dir
    return list_bases(data_dir=data_dir, offline_ssl=latest_offline_ssl(data_dir))


def parse_base(text: str, bases: Sequence[BaseStatus] | None, errors: list[str]) -> str | None:
    """The launch form's ``base`` (empty: the preset's own, None); one that is unknown or not
    available here goes to errors, with the reason."""
    name = text.strip()
    if not name:
        return None
    found = {b.spec.name: b for b in bases or ()}
    if name not in found:
        errors.append(f"base: {name[:40]!r} is not one of {', '.join(found) or 'the bases'}")
        return None
    if not found[name].available:
        errors.append(f"base: {name} is not available here: {found[name].reason}")
        return None
    return name


def parse_launch_form(
    form: Mapping[str, str],
    options: EngineOptions | None = None,
    bases: Sequence[BaseStatus] | None = None,
) -> LaunchRequest:
    """The launch form's fields as a :class:`LaunchRequest`; ``options`` are the web engines
    the settings offer (none: the offline web only), ``bases`` the bases (:func:`base_choices`;
    none: only the preset's own). ``form["engines"]`` lists the ticked web engines,
    comma-separated.

    Raises :class:`InvalidInput` listing every field that needs fixing (in ``details``).
    """
    errors: list[str] = []
    upload_text = form.get("upload_id", "").strip()
    upload_id = whole_number(upload_text, ID_MAX)
    if not upload_text:
        errors.append("upload: choose the images to explore for")
    elif upload_id is None:
        errors.append(f"upload: {upload_text[:40]!r} is not an upload number")
    preset = form.get("preset", "cpu-small").strip()
    if preset not in PRESETS:
        errors.append(f"preset: {preset[:40]!r} is not one of {', '.join(PRESETS)}")
    engines = parse_engine_choice(form, options or EngineOptions(), errors)
    name = " ".join(form.get("name", "").split())
    if len(name) > 255:
        errors.append("name: at most 255 characters")
    iterations = _whole_number(form, "iterations", errors)
    queries = _whole_number(form, "queries_per_iteration", errors)
    per_query = _whole_number(form, "images_per_query", errors)
    seed = _whole_number(form, "seed", errors)
    roots = parse_roots(form.get("roots", ""), errors)
    base = parse_base(form.get("base", ""), bases, errors)
    if base is None and bases is not None and preset in PRESETS:
        own = {b.spec.name: b for b in bases}.get(make_config(cast(Preset, preset)).train.base)
        if own is not None and not own.available:
            errors.append(f"base: the {preset} preset starts from {own.spec.name}, which is not "
                          f"here: {own.reason}; or pick another base")
    if errors:
        raise InvalidInput("the run was not launched: fix the fields below", details=errors)
    assert upload_id is not None
    return LaunchRequest(
        upload_id=upload_id,
        name=name,
        search_engine=engines.search_engine,
        preset=cast(Preset, preset),  # checked against PRESETS above
        iterations=iterations,
        queries_per_iteration=queries,
        images_per_query=per_query,
        seed=seed or 0,
        class_names=tuple(parse_class_names(form.get("class_names", ""))),
        engines=engines,
        roots=roots,
        base=base,
    )


def launch_run(session: Session, settings: Settings, request: LaunchRequest) -> Run:
    """Create the run, queue it, commit, and hand it to the worker."""
    upload = get_upload(session, request.upload_id)
    if upload.n_accepted == 0:
        raise InvalidInput(f"upload {upload.id} has no accepted images to explore for")
    name = request.name or f"{upload.name or f'upload {upload.id}'} ({request.preset})"
    run = create_run(
        session,
        name=name[:255],
        config=request.config(),
        upload_id=upload.id,
        search_engine=request.search_engine,
        engine_config=request.engines.engine_config,
        licenses=request.engines.licenses,
    )
    set_run_status(session, run.id, S.QUEUED)
    session.commit()
    enqueue_next(run.id, settings=settings)
    publish(run.id, settings=settings)
    return run


# -- controls ------------------------------------------------------------------------------


def available_actions(run: Run) -> frozenset[Action]:
    """The controls that do something for ``run`` now (the dashboard enables only these)."""
    status = RunStatus(run.status)
    actions: set[Action] = set()
    if status == S.QUEUED or (status == S.RUNNING and not run.pause_requested):
        actions.add("pause")
    if status in (S.DRAFT, S.PAUSED, S.FAILED) or (
        run.pause_requested and status in (S.QUEUED, S.RUNNING)
    ):
        actions.add("resume")
    if status in (S.DRAFT, S.QUEUED, S.RUNNING, S.PAUSED):
        actions.add("cancel")
    return frozenset(actions)


def _refuse(run: Run, requested: str) -> IllegalTransition:
    current = RunStatus(run.status)
    return IllegalTransition(
        run.id, current.value, requested, sorted(s.value for s in TRANSITIONS[current])
    )


def control_run(session: Session, settings: Settings, run_id: int, action: Action) -> Run:
    """Pause, resume or cancel run ``run_id`` (see the table above), commit, and tell the
    worker (resume) and the dashboards. Raises :class:`IllegalTransition` (409) when the
    run's status does not allow it."""
    run = get_run(session, run_id, for_update=True)
    status = RunStatus(run.status)
    enqueue = False
    if action == "pause":
        if status == S.QUEUED:
            set_run_status(session, run_id, S.PAUSED)
        elif status == S.RUNNING:
            request_pause(session, run_id)
        elif status != S.PAUSED:
            raise _refuse(run, S.PAUSED.value)
    elif action == "resume":
        if run.pause_requested and status in (S.QUEUED, S.RUNNING):
            withdraw_pause(session, run_id)
        elif status in (S.DRAFT, S.PAUSED, S.FAILED):
            set_run_status(session, run_id, S.QUEUED)
            enqueue = True
        elif status == S.RUNNING:
            raise Conflict(f"run {run_id} is running: there is nothing to resume")
        elif status != S.QUEUED:
            raise _refuse(run, S.QUEUED.value)
    elif action == "cancel":
        if status in (S.DRAFT, S.PAUSED):
            set_run_status(session, run_id, S.CANCELLED)
        elif status in (S.QUEUED, S.RUNNING):
            set_run_status(session, run_id, S.CANCELLING)
        elif status not in (S.CANCELLING, S.CANCELLED):
            raise _refuse(run, S.CANCELLING.value)
    else:
        raise InvalidInput(f"unknown action {action!r}")
    session.commit()
    if enqueue:
        enqueue_next(run_id, settings=settings)
    publish(run_id, settings=settings)
    return run
