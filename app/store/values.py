"""Making engine values storable: NaN and infinities become NULL.

The engine reports ``nan`` for "no value yet" (an unscored image, an empty iteration). SQLite
would store NaN as NULL anyway, and PostgreSQL's JSONB refuses NaN outright, so every float goes
through here and the two databases hold the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite_or_none(value: float | int | None) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def clean_json(value: Any) -> Any:
    """A copy of ``value`` that any JSON column accepts: non-finite floats become None,
    tuples become lists, keys become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value
