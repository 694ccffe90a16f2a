"""Progress sinks for the command line: one tqdm bar per phase."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

_LABELS = {
    "embed": "embedding texts",
    "search": "searching",
    "download": "downloading",
    "train": "training",
    "score": "scoring",
}


class TqdmProgress:
    """Draws a bar per phase on stderr (disabled when ``quiet``)."""

    def __init__(self, *, quiet: bool = False, prefix: str = "") -> None:
        self.quiet = quiet
        self.prefix = prefix
        self._bars: dict[str, Any] = {}

    def start(self, phase: str, total: int | None) -> None:
        self.finish(phase)
        label = f"{self.prefix}{_LABELS.get(phase, phase)}"
        self._bars[phase] = tqdm(
            total=total, desc=label, unit="it", file=sys.stderr, disable=self.quiet,
            leave=False, dynamic_ncols=True,
        )

    def advance(self, phase: str, n: int = 1) -> None:
        bar = self._bars.get(phase)
        if bar is not None:
            bar.update(n)

    def finish(self, phase: str) -> None:
        bar = self._bars.pop(phase, None)
        if bar is not None:
            bar.close()
