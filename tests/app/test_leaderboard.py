"""The concept leaderboard against a slow reference: every sort, search, filter and page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.main import create_app
from app.services.dashboard import LEADERBOARD_PAGE
from app.settings import Settings
from app.store.concepts import upsert_concepts
from app.store.db import make_session_factory, session_scope
from app.store.vetoes import record_veto
from tests.app.auth import logged_in
from tests.app.factories import concept_rows, make_running_run

N = 61
SORTS = {
    "reward": "observed_reward_mean",
    "mu": "mu",
    "sigma": "sigma",
    "probability": "probability",
    "queried": "times_queried",
}
VETOED = {4, 9, 10, 33, 60}


def reference(rows: list[dict[str, Any]], *, sort: str, q: str, show: str) -> list[int]:
    """The concept indices the leaderboard should list, in order, all pages together."""
    term = q.strip().lower()
    kept = [
        r
        for r in rows
        if (not term or term in r["lemma"].lower() or term in r["text"].lower())
        and (show == "all" or (r["index"] in VETOED) == (show == "vetoed"))
    ]
    if sort in SORTS:
        field = SORTS[sort]
        kept.sort(key=lambda r: (r[field] is None, -(r[field] or 0), r["index"]))
    elif sort == "lemma":
        kept.sort(key=lambda r: (r["lemma"], r["index"]))
    else:
        kept.sort(key=lambda r: r["index"])
    return [r["index"] for r in kept]


def _listed(client: TestClient, run_id: int, **params: Any) -> tuple[list[int], int, int]:
    """Indices on the page, the total it reports, and the page it shows."""
    text = client.get(f"/runs/{run_id}/leaderboard", params=params).text
    rows = [int(i) for i in re.findall(r'<tr data-concept-index="(\d+)"', text)]
    total = int(re.search(r'data-total="(\d+)"', text).group(1))  # type: ignore[union-attr]
    page = int(re.search(r'data-page="(\d+)"', text).group(1))  # type: ignore[union-attr]
    return rows, total, page


def test_the_leaderboard_matches_the_reference(tmp_path: Path, db_url: str, engine: Engine) -> None:
    rows = concept_rows(N, seed=3)
    with session_scope(make_session_factory(engine)) as session:
        run = make_running_run(session)
        upsert_concepts(session, run.id, rows)
        for index in VETOED:
            record_veto(session, run.id, "veto", concept_index=index)
        run_id = run.id
    # a search term that hits some lemmas and, through the upper-cased text, the same rows
    term = max("abcdefghij", key=lambda c: sum(c in r["lemma"] for r in rows))
    searches = ["", term, term.upper(), "number 1", "nothing-like-this"]
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url))
    checked = 0
    with logged_in(app) as client:
        for sort in [*SORTS, "lemma", "index"]:
            for q in searches:
                for show in ("all", "live", "vetoed"):
                    expected = reference(rows, sort=sort, q=q, show=show)
                    last = max(1, -(-len(expected) // LEADERBOARD_PAGE))
                    for page in range(1, last + 2):  # one past the end: shows the last page
                        params = {"sort": sort, "q": q, "show": show, "page": page}
                        listed, total, shown = _listed(client, run_id, **params)
                        at = min(page, last)
                        want = expected[(at - 1) * LEADERBOARD_PAGE : at * LEADERBOARD_PAGE]
                        assert (listed, total, shown) == (want, len(expected), at), params
                        checked += 1
        assert checked > 150
        assert client.get(f"/runs/{run_id}/leaderboard", params={"sort": "x"}).status_code == 422
        assert client.get(f"/runs/{run_id}/leaderboard", params={"page": 0}).status_code == 422


def test_sort_and_paging_links_keep_the_view(tmp_path: Path, db_url: str, engine: Engine) -> None:
    with session_scope(make_session_factory(engine)) as session:
        run = make_running_run(session)
        upsert_concepts(session, run.id, concept_rows(N))
        run_id = run.id
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url))
    with logged_in(app) as client:
        params: dict[str, Any] = {"sort": "mu", "show": "live", "page": 2, "q": "number"}
        listed, _, _ = _listed(client, run_id, **params)
        ticked = listed[1]
        text = client.get(f"/runs/{run_id}/leaderboard", params={**params, "pick": [ticked]}).text
        fragment = f"http://testserver/runs/{run_id}/leaderboard"
        # htmx links carry sort/show/page and take the search from the live search box
        assert f'hx-get="{fragment}?sort=mu&amp;show=live&amp;page=3"' in text
        assert 'hx-include="#leaderboard-q"' in text
        # plain links keep the whole view, search included
        page = f"http://testserver/runs/{run_id}"
        assert f'href="{page}?sort=sigma&amp;q=number&amp;show=live#leaderboard"' in text
        # ticked concepts stay ticked when the region refreshes, and only those
        assert re.findall(r'name="pick" value="(\d+)"[^>]*checked', text) == [str(ticked)]
        # the search form's sort and filter follow the table (out of band)
        assert '<div id="leaderboard-state" hx-swap-oob="true">' in text
        assert '<input type="hidden" name="sort" value="mu">' in text
