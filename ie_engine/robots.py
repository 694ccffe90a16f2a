"""Publisher opt-outs read from HTTP headers: ``X-Robots-Tag: noai`` and ``noimageai``.

``X-Robots-Tag`` carries comma-separated directives, optionally scoped to one crawler by a
``name:`` prefix (``X-Robots-Tag: otherbot: noai``). A directive scoped to another crawler does
not apply to us; an unscoped one, or one scoped to our User-Agent's product token, does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

AI_OPT_OUTS: Final = frozenset({"noai", "noimageai"})
"""Directives that refuse use of the content for AI training."""

# Directives that themselves contain a colon (``max-snippet: 20``), never a crawler name.
_COLON_DIRECTIVES: Final = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)


def product_token(user_agent: str) -> str:
    """``"internet-explorer/0.1 (+...)"`` -> ``"internet-explorer"`` (lower case)."""
    m = re.match(r"\s*([^\s/(]+)", user_agent)
    return m.group(1).lower() if m else ""


def noai_directive(values: Iterable[str], user_agent: str = "") -> str | None:
    """The first AI opt-out among ``X-Robots-Tag`` header ``values`` that applies to a crawler
    sending ``user_agent``, or None."""
    ours = product_token(user_agent)
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            item = part.strip().lower()
            if not item:
                continue
            head, sep, rest = item.partition(":")
            if sep and head.strip() not in _COLON_DIRECTIVES and " " not in head.strip():
                scope = head.strip()
                item = rest.strip()
            if item in AI_OPT_OUTS and scope in (None, "*", ours):
                return item
    return None


__all__ = ["AI_OPT_OUTS", "noai_directive", "product_token"]
