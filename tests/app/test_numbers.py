"""Whole numbers from forms, query strings and headers: ASCII digits within bounds, anything else
refused. ``"²"`` and a 5,000-digit number were 500s (``str.isdigit`` let them through, ``int``
failed on them); the routes' own refusals are tested with each route."""

from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.numbers import BIG_ID_MAX, ID_MAX, whole_number
from app.routes.live import _start_id
from app.services.exports import MAX_TOP, dataset_options


@pytest.mark.parametrize(
    ("text", "high", "expected"),
    [
        ("7", 10, 7),
        (" 007 ", 10, 7),
        ("0", 10, 0),
        ("10", 10, 10),
        ("0" * 5000 + "5", 10, 5),
        (str(ID_MAX), ID_MAX, ID_MAX),
        ("11", 10, None),
        (str(ID_MAX + 1), ID_MAX, None),
        ("", 10, None),
        ("  ", 10, None),
        ("-1", 10, None),
        ("+1", 10, None),
        ("1.0", 10, None),
        ("1_0", 100, None),
        ("²", 10, None),
        ("٣", 10, None),
        ("1" * 5000, BIG_ID_MAX, None),
    ],
)
def test_whole_number(text: str, high: int, expected: int | None) -> None:
    assert whole_number(text, high) == expected


@pytest.mark.parametrize("top", ["²", "1" * 5000, "0", str(MAX_TOP + 1), "-5"])
def test_the_dataset_s_top_n_refuses_what_is_not_a_number_in_range(top: str) -> None:
    with pytest.raises(InvalidInput, match=r"top: .* is not a number from 1 to 1,000,000"):
        dataset_options({"top": top})


def test_the_dataset_s_top_n_reads_a_plain_number_or_takes_the_default() -> None:
    assert dataset_options({"top": " 42 "}).top_n == 42
    assert dataset_options({"top": ""}).top_n == 500


@pytest.mark.parametrize("header", ["²", "1" * 5000, str(BIG_ID_MAX + 1), "abc", ""])
def test_a_last_event_id_that_is_no_event_id_leaves_the_page_s_start(header: str) -> None:
    assert _start_id(header, 5) == 5
    assert _start_id(header, None) == 0


def test_a_last_event_id_wins_over_the_page_s_start() -> None:
    assert _start_id(" 12 ", 5) == 12
    assert _start_id(None, 5) == 5
