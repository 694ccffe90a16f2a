"""The run dashboard's regions, each read from the store alone (never from Celery).

A region is one fragment of the page (status and controls, phase progress, the iteration's
queries, the concept leaderboard, the image gallery, the event log) and one function here that
returns its template context. The page is all of them at once (:func:`dashboard_context`);
a region refreshes by fetching its own fragment again, carrying its view in its URL (:class:`View`).
The curves and the concept map are JSON (:func:`curves`, :func:`concept_map`) for the chart
library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from app.services.engines import engines_context
from app.services.runs import available_actions
from app.store.concepts import ConceptSort, concepts_by_index, list_concepts, map_points
from app.store.events import (
    events_of_kind_after,
    latest_event_id,
    latest_event_of_kind,
    recent_events,
)
from app.store.images import image_iterations, image_stats_by_concept, images_for, kept_by_iteration
from app.store.iterations import list_iterations, queries_for, query_iterations
from app.store.models import Concept, Event, Image, Query, Run, RunStatus, Upload
from app.store.runs import get_run

Show = Literal["all", "live", "vetoed"]

LEADERBOARD_PAGE: Final = 25
"""Concepts per page of the leaderboard."""
GALLERY_PAGE: Final = 24
"""Images per page of the gallery."""
EVENT_LOG_SIZE: Final = 50
"""Events the page shows when it loads (newer ones arrive over the stream)."""
MAP_MAX_POINTS: Final = 4000
"""About this many concepts are drawn on the map (all queried and vetoed ones, and a fixed
sample of the rest): enough to see the shape of a 146k-concept vocabulary, light to draw."""
PHASES: Final = ("search", "download", "train", "score")
"""The phases of one iteration, in order; any other phase the worker reports is shown after."""

SSE_KINDS: Final = (
    "status", "control", "phase", "iteration", "queries", "images", "concepts", "veto",
    "veto-applied", "log", "error", "engines",
)
"""Event kinds the page listens for (the event log shows each one as it arrives)."""
REFRESH_ON: Final[dict[str, tuple[str, ...]]] = {
    "status": ("status", "control", "iteration", "error"),
    "progress": ("phase", "status", "iteration"),
    "queries": ("queries", "images", "iteration", "concepts", "veto", "veto-applied"),
    "leaderboard": ("iteration", "concepts", "veto", "veto-applied"),
    "gallery": ("images", "iteration", "veto", "veto-applied"),
    "charts": ("iteration",),
    "map": ("iteration", "concepts", "veto", "veto-applied"),
    "engines": ("engines", "status"),
}
"""Which event kinds make each region fetch itself again."""


@dataclass(frozen=True)
class View:
    """What the person is looking at: the leaderboard's sort, search, filter and page, the
    gallery's concept, iteration and page, the queries' iteration, and ticked concepts."""

    sort: ConceptSort = "reward"
    q: str = ""
    show: Show = "all"
    page: int = 1
    concept: int | None = None
    iteration: int | None = None
    gpage: int = 1
    qiter: int | None = None
    picks: frozenset[int] = field(default_factory=frozenset)
    """Concepts ticked in the leaderboard (kept ticked when it refreshes)."""

    def query(self, **changes: Any) -> str:
        """``?key=value...`` of this view with ``changes``; defaults and ticks left out."""
        view = replace(self, **changes)
        default = View()
        pairs = [
            (name, getattr(view, name))
            for name in ("sort", "q", "show", "page", "concept", "iteration", "gpage", "qiter")
            if getattr(view, name) not in (None, getattr(default, name))
        ]
        return "?" + urlencode(pairs) if pairs else ""

    def leaderboard_query(self, **changes: Any) -> str:
        """The leaderboard's own part of :meth:`query` (its fragment needs no more)."""
        view = replace(self, **changes)
        return View(sort=view.sort, q=view.q, show=view.show, page=view.page).query()

    def gallery_query(self, **changes: Any) -> str:
        """The gallery's own part of :meth:`query`."""
        view = replace(self, **changes)
        return View(concept=view.concept, iteration=view.iteration, gpage=view.gpage).query()


def pages(total: int, size: int) -> int:
    """How many pages ``total`` rows fill (at least one)."""
    return max(1, math.ceil(total / size))


# -- status and progress ----------------------------------------------------------------


def status_context(session: Session, run_id: int) -> dict[str, Any]:
    """The run's header: status, iteration, error, upload, and the controls that apply."""
    run = get_run(session, run_id)
    upload = session.get(Upload, run.upload_id) if run.upload_id is not None else None
    return {"run": run, "upload": upload, "actions": available_actions(run)}


@dataclass(frozen=True)
class PhaseBar:
    """One phase of the current iteration: ``active`` (the worker is in it), ``done``,
    ``partial`` (started, not finished, not current) or ``pending``."""

    name: str
    state: Literal["active", "done", "partial", "pending"]
    done: int | None = None
    total: int | None = None

    @property
    def percent(self) -> float | None:
        """How far along, 0-100; None when the total is unknown."""
        if self.state == "done" and not self.total:
            return 100.0
        if not self.total:
            return None
        return min(100.0, 100.0 * (self.done or 0) / self.total)


def _count(value: Any) -> int | None:
    """A count from an event payload: a finite non-negative number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(int(value), 0)


def phase_bars(session: Session, run: Run) -> list[PhaseBar]:
    """Progress of each phase of the iteration in progress.

    The phases reported since the last ``iteration`` event belong to the iteration in progress;
    the run's own ``phase``/``phase_done``/``phase_total`` are the freshest figures of the
    phase the worker is in.
    """
    boundary = latest_event_of_kind(session, run.id, "iteration")
    latest: dict[str, tuple[int | None, int | None]] = {}
    for event in events_of_kind_after(session, run.id, "phase", boundary.id if boundary else 0):
        name = event.payload.get("phase")
        if isinstance(name, str) and name:
            payload = event.payload
            latest[name[:32]] = (_count(payload.get("done")), _count(payload.get("total")))
    running = run.status == RunStatus.RUNNING
    current = run.phase if running else None
    if current:
        latest[current] = (run.phase_done, run.phase_total)
    names = [*PHASES, *(name for name in latest if name not in PHASES)]
    current_rank = PHASES.index(current) if current in PHASES else -1
    bars: list[PhaseBar] = []
    for rank, name in enumerate(names):
        done, total = latest.get(name, (None, None))
        if name == current:
            bars.append(PhaseBar(name, "active", done, total))
        elif rank < current_rank or (total is not None and done is not None and done >= total):
            bars.append(PhaseBar(name, "done", done, total))
        elif name in latest:
            bars.append(PhaseBar(name, "partial", done, total))
        else:
            bars.append(PhaseBar(name, "pending"))
    return bars


def progress_context(session: Session, run_id: int) -> dict[str, Any]:
    run = get_run(session, run_id)
    return {"run": run, "bars": phase_bars(session, run)}


# -- the iteration's queries ------------------------------------------------------------


@dataclass(frozen=True)
class QueryRow:
    """A query with what it has brought so far (its own figures, or the images stored yet)."""

    query: Query
    concept: Concept | None
    n_images: int
    reward: float | None


@dataclass(frozen=True)
class QueryTable:
    iteration: int | None
    """The iteration shown; None while no query is stored."""
    iterations: list[int]
    rows: list[QueryRow]


def queries_context(session: Session, run_id: int, view: View) -> dict[str, Any]:
    """The queries of ``view.qiter`` (default: the iteration in progress, else the newest)."""
    run = get_run(session, run_id)
    iterations = query_iterations(session, run_id)
    chosen = view.qiter
    if chosen is None and iterations:
        chosen = run.iteration if run.iteration in iterations else iterations[-1]
    rows: list[QueryRow] = []
    if chosen is not None:
        queries = queries_for(session, run_id, chosen)
        stats = image_stats_by_concept(session, run_id, chosen)
        concepts = concepts_by_index(session, run_id, (q.concept_index for q in queries))
        for q in queries:
            n_stored, mean = stats.get(q.concept_index, (0, None))
            rows.append(
                QueryRow(
                    query=q,
                    concept=concepts.get(q.concept_index),
                    n_images=max(q.n_images, n_stored),
                    reward=q.observed_reward if q.observed_reward is not None else mean,
                )
            )
    table = QueryTable(iteration=chosen, iterations=iterations, rows=rows)
    return {"run": run, "table": table, "view": view}


# -- the leaderboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class Leaderboard:
    rows: list[Concept]
    total: int
    page: int
    pages: int


def leaderboard_context(session: Session, run_id: int, view: View) -> dict[str, Any]:
    """One page of the whole vocabulary, sorted and searched as ``view`` says."""
    run = get_run(session, run_id)
    vetoed = {"all": None, "live": False, "vetoed": True}[view.show]
    rows, total = list_concepts(
        session, run_id, sort=view.sort, search=view.q, vetoed=vetoed,
        page=view.page, page_size=LEADERBOARD_PAGE,
    )
    last = pages(total, LEADERBOARD_PAGE)
    if view.page > last:  # the list shrank under the person (a search, a veto): show the end
        view = replace(view, page=last)
        rows, total = list_concepts(
            session, run_id, sort=view.sort, search=view.q, vetoed=vetoed,
            page=last, page_size=LEADERBOARD_PAGE,
        )
    board = Leaderboard(rows=rows, total=total, page=view.page, pages=last)
    return {"run": run, "board": board, "view": view, "ended": run.status in _ENDED}


_ENDED: Final = frozenset({RunStatus.CANCELLED, RunStatus.FINISHED, RunStatus.FAILED})


# -- the gallery --------------------------------------------------------------------------


@dataclass(frozen=True)
class Gallery:
    images: list[Image]
    concepts: dict[int, Concept]
    """The concepts of the images shown, by index."""
    total: int
    page: int
    pages: int
    iterations: list[int]
    """Iterations that have images (the filter's choices)."""
    concept: Concept | None
    """The concept filtered on, if any."""


def gallery_context(session: Session, run_id: int, view: View) -> dict[str, Any]:
    """One page of the run's images (best reward first), per concept and/or iteration."""
    run = get_run(session, run_id)
    images, total = images_for(
        session, run_id, concept_index=view.concept, iteration=view.iteration,
        page=view.gpage, page_size=GALLERY_PAGE,
    )
    wanted = {i.concept_index for i in images}
    if view.concept is not None:
        wanted.add(view.concept)
    concepts = concepts_by_index(session, run_id, wanted)
    gallery = Gallery(
        images=images,
        concepts=concepts,
        total=total,
        page=view.gpage,
        pages=pages(total, GALLERY_PAGE),
        iterations=image_iterations(session, run_id),
        concept=concepts.get(view.concept) if view.concept is not None else None,
    )
    return {"run": run, "gallery": gallery, "view": view, "ended": run.status in _ENDED}


# -- the event log and the whole page ------------------------------------------------------


def log_context(session: Session, run_id: int) -> dict[str, Any]:
    """The newest events, newest first."""
    run = get_run(session, run_id)
    events: list[Event] = recent_events(session, run_id, limit=EVENT_LOG_SIZE)
    return {"run": run, "events": events}


def dashboard_context(session: Session, run_id: int, view: View) -> dict[str, Any]:
    """Every region of the page, and the id of the newest event they include."""
    get_run(session, run_id)  # 404 before anything else
    last_event_id = latest_event_id(session, run_id)  # first: see the function's docstring
    context: dict[str, Any] = {
        "last_event_id": last_event_id,
        "sse_kinds": SSE_KINDS,
        "refresh_on": REFRESH_ON,
    }
    for part in (
        status_context(session, run_id),
        progress_context(session, run_id),
        queries_context(session, run_id, view),
        leaderboard_context(session, run_id, view),
        gallery_context(session, run_id, view),
        log_context(session, run_id),
        engines_context(get_run(session, run_id)),
    ):
        context.update(part)
    context["view"] = replace(view, page=context["board"].page)
    return context


# -- JSON for the chart library ------------------------------------------------------------


def curves(session: Session, run_id: int) -> dict[str, Any]:
    """Per recorded iteration: kNN accuracy (None without labels), mean image and concept
    reward, mean loss, and the share of the iteration's images kept for replay."""
    get_run(session, run_id)
    iterations = list_iterations(session, run_id)
    kept = kept_by_iteration(session, run_id)

    def share(number: int) -> float | None:
        n, k = kept.get(number, (0, 0))
        return k / n if n else None

    knn = [it.knn_accuracy for it in iterations]
    return {
        "iterations": [it.number for it in iterations],
        "knn_accuracy": knn,
        "has_knn": any(v is not None for v in knn),
        "mean_image_reward": [it.mean_image_reward for it in iterations],
        "mean_concept_reward": [it.mean_concept_reward for it in iterations],
        "loss": [it.loss_mean for it in iterations],
        "kept_share": [share(it.number) for it in iterations],
    }


def concept_map(session: Session, run_id: int) -> dict[str, Any]:
    """The concepts placed on the map (see :data:`MAP_MAX_POINTS`), with predicted reward and
    whether each was queried or vetoed."""
    get_run(session, run_id)
    points, total = map_points(session, run_id, max_points=MAP_MAX_POINTS)
    return {
        "total": total,
        "shown": len(points),
        "points": [
            {
                "index": c.concept_index,
                "lemma": c.lemma,
                "x": c.map_x,
                "y": c.map_y,
                "mu": c.mu,
                "queried": c.times_queried > 0,
                "vetoed": c.vetoed,
            }
            for c in points
        ],
    }
