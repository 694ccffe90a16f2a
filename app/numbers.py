"""Whole numbers typed into forms, query strings and headers, read without surprises.

``str.isdigit`` is true of ``"²"`` and of other digits ``int`` refuses, and ``int`` refuses a
string of more than 4,300 digits: a check with the one and a conversion with the other fail on
such input (a 500) instead of refusing it. :func:`whole_number` accepts ASCII digits only, and
never converts more digits than the largest allowed value has.
"""

from __future__ import annotations

from typing import Final

ID_MAX: Final = 2**31 - 1
"""The largest run, upload or concept number (a PostgreSQL ``integer``)."""
BIG_ID_MAX: Final = 2**63 - 1
"""The largest image or event id (a PostgreSQL ``bigint``)."""


def whole_number(text: str, high: int) -> int | None:
    """``text`` (blanks around it ignored) as a whole number from 0 to ``high``; None when it is
    anything else: empty, signed, with other characters than ``0``-``9``, or too large."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    value = int(digits)
    return value if value <= high else None
