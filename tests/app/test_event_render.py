"""The event log's line for an applied veto shows its effect on the nearest concepts."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from app.templating import make_templates


def _render(kind: str, payload: dict[str, object]) -> str:
    env = make_templates().env
    event = SimpleNamespace(id=7, kind=kind, payload=payload,
                            created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    return env.get_template("partials/_event.html").render(event=event)


def test_veto_applied_lists_each_neighbour_before_and_after() -> None:
    html = _render("veto-applied", {
        "vetoed": [3], "unvetoed": [], "added": [], "replay_removed": 12, "iteration": 4,
        "others_ratio": 1.03,
        "neighbours": [
            {"vetoed": 3, "index": 9, "lemma": "<b>sparrow</b>", "mu_before": 0.41,
             "mu_after": 0.30, "p_before": 2e-4, "p_after": 5e-5},
            {"vetoed": 3, "index": 10, "lemma": "finch", "mu_before": 0.2, "mu_after": 0.21,
             "p_before": 1e-4, "p_after": 1.1e-4},
        ],
    })
    assert 'data-testid="veto-effect"' in html
    assert "applied before iteration 4" in html and "12 images left the replay buffer" in html
    assert "&lt;b&gt;sparrow&lt;/b&gt;" in html  # lemmas are escaped
    assert "2.00e-04 &rarr; 5.00e-05" in html and "-75%" in html
    assert "+10%" in html
    assert "&times;1.03" in html
    assert html.count('class="fell"') == 1 and html.count('class="rose"') == 1


def test_veto_applied_without_neighbours_is_one_line() -> None:
    html = _render("veto-applied", {"vetoed": [], "unvetoed": [5], "added": [], "iteration": 2})
    assert "1 unvetoed" in html and "veto-effect" not in html


def test_veto_applied_shows_what_the_negative_observation_did() -> None:
    html = _render("veto-applied", {
        "vetoed": [3], "unvetoed": [], "added": [], "iteration": 4, "others_ratio": 1.2,
        "negative_ratio": 0.5,
        "neighbours": [
            {"vetoed": 3, "index": 9, "lemma": "sparrow", "mu_before": 0.41, "mu_after": 0.30,
             "p_before": 2e-4, "p_after": 2.2e-4, "p_removed_only": 4.4e-4},
        ],
    })
    # Its probability rose (the vetoed concept's share was freed), but the negative
    # observation halved what it would have been had the concept only been removed.
    assert "+10%" in html
    assert "if only removed: 4.40e-04, so the negative observation: -50%" in html
    assert "the negative observation alone: &times;0.50" in html
    assert html.count('class="rose"') == 1 and html.count('class="fell"') == 1
