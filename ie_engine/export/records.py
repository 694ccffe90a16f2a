"""What the exports read: a run folder's images with provenance, its curves and its vetoes.

A run folder (see :mod:`ie_engine.explorer`) holds every image record twice: in
``iterations/NNNN-images.jsonl`` as it was when its iteration ended, and in ``checkpoint.pt``
as it is now (a later veto takes a concept's images out of the replay buffer, so ``kept`` can
change after the iteration was written). :func:`load_run` prefers the checkpoint and falls back
to the iteration files when there is none.

The web app builds the same :class:`RunData` from its database (``app.services.exports``), so
every export works from either source.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ie_engine.imaging import hamming, is_informative

LICENSE_URLS: dict[str, str] = {
    "public-domain": "https://creativecommons.org/publicdomain/mark/1.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "GPL-2.0": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
    "GPL-3.0": "https://www.gnu.org/licenses/gpl-3.0.html",
}
"""Where each license the engines report is written down (the offline web's two included)."""

LEAK_VERDICTS = ("clear", "near-target", "not-comparable", "not-checked")
"""``clear``: more than the threshold from every target image; ``near-target``: within it (the
downloader refuses these, so an export should never hold one); ``not-comparable``: the image's
dHash is nearly blank and not used for matching; ``not-checked``: no target hashes given."""


@dataclass
class ExportImage:
    """One stored web image with its provenance, from a run folder or the app's database."""

    file: Path
    """The stored image file (absolute)."""
    sha256: str
    dhash: str
    iteration: int
    concept_index: int
    concept: str
    query: str
    image_url: str
    page_url: str
    title: str
    license: str
    creator: str
    engine: str
    category: str = ""
    relevance: float | None = None
    """The image's reward: mean cosine similarity to its nearest target images."""
    kept: bool = False
    """In the replay buffer (the images the run chose to keep)."""
    license_url: str = ""

    def __post_init__(self) -> None:
        if self.relevance is not None and not math.isfinite(self.relevance):
            self.relevance = None
        if not self.license_url:
            self.license_url = LICENSE_URLS.get(self.license, "")


@dataclass
class VetoNote:
    """A concept a person vetoed (or unvetoed), and when."""

    concept_index: int
    concept: str
    action: str = "veto"
    iteration: int | None = None
    """The run's iteration when it was asked (None: not recorded)."""
    detail: str = ""


@dataclass
class RunData:
    """Everything the report, the datasheet and the model card say about one run."""

    name: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    iterations: list[dict[str, Any]]
    """``iterations/NNNN.json`` summaries, in order."""
    images: list[ExportImage]
    vetoes: list[VetoNote] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    """What is known of the target: ``name``, ``images``, ``classes``."""

    @property
    def iterations_done(self) -> int:
        return max((int(h.get("iteration", 0)) for h in self.history), default=0)

    @property
    def kept(self) -> list[ExportImage]:
        return [i for i in self.images if i.kept]


def attribution(image: ExportImage) -> str:
    """A one-line credit in the usual title / author / source / license order."""
    title = image.title.strip() or image.sha256[:12]
    parts = [f'"{title}"']
    if image.creator.strip():
        parts.append(f"by {image.creator.strip()}")
    if image.page_url:
        parts.append(f"from {image.page_url}")
    lic = image.license or "license unknown"
    parts.append(f"({lic}{', ' + image.license_url if image.license_url else ''})")
    return " ".join(parts)


def leak_check(dhash_hex: str, target_hashes: list[int] | None,
               threshold: int) -> tuple[int | None, str]:
    """``(nearest Hamming distance to a target image, verdict)``; see :data:`LEAK_VERDICTS`."""
    if not target_hashes:
        return None, "not-checked"
    try:
        h = int(dhash_hex, 16)
    except ValueError:
        return None, "not-comparable"
    distance = min(hamming(h, t) for t in target_hashes)
    if not is_informative(h):
        return distance, "not-comparable"
    return distance, "clear" if distance > threshold else "near-target"


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def image_from_record(record: dict[str, Any], run_dir: Path) -> ExportImage:
    """An engine ``ImageRecord`` (as a dict) as an :class:`ExportImage`."""
    reward = record.get("reward")
    return ExportImage(
        file=run_dir / str(record["path"]),
        sha256=str(record["sha256"]),
        dhash=str(record.get("dhash", "")),
        iteration=int(record["iteration"]),
        concept_index=int(record["concept_index"]),
        concept=str(record.get("concept", "")),
        query=str(record.get("query", "")),
        image_url=str(record.get("image_url", "")),
        page_url=str(record.get("page_url", "")),
        title=str(record.get("title", "")),
        license=str(record.get("license", "")),
        creator=str(record.get("creator", "")),
        engine=str(record.get("engine", "")),
        category=str(record.get("category", "")),
        relevance=None if reward is None else float(reward),
        kept=bool(record.get("kept", False)),
        license_url=str(record.get("license_url", "")),
    )


def _checkpoint_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    from ie_engine.checkpoint import load_checkpoint  # torch, only when there is a checkpoint

    return load_checkpoint(path)


def load_run(run_dir: Path, *, name: str | None = None, read_checkpoint: bool = True) -> RunData:
    """Read a run folder written by the explorer (the CLI's or the worker's).

    ``read_checkpoint=False`` reads only the JSON files (no torch): images as their iterations
    recorded them, no vetoes.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "iterations").is_dir() and not (run_dir / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no iterations/, no checkpoint)")
    iterations = [
        _read_json(f, {})
        for f in sorted((run_dir / "iterations").glob("[0-9][0-9][0-9][0-9].json"))
    ]
    state = _checkpoint_state(run_dir) if read_checkpoint else None
    records: list[dict[str, Any]]
    vetoes: list[VetoNote] = []
    if state is not None:
        records = list(state.get("images", []))
        history = list(state.get("history", []))
        config = dict(state.get("config", {}))
        vetoed = [int(i) for i in state.get("policy", {}).get("vetoed", [])]
        vetoes = infer_vetoes(vetoed, records, iterations)
    else:
        records = []
        for f in sorted((run_dir / "iterations").glob("[0-9][0-9][0-9][0-9]-images.jsonl")):
            records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        history = list(_read_json(run_dir / "metrics.json", []))
        config = dict(_read_json(run_dir / "config.json", {}))
    return RunData(
        name=name or run_dir.resolve().name,
        config=config,
        history=history,
        iterations=iterations,
        images=[image_from_record(r, run_dir) for r in records],
        vetoes=vetoes,
        final=dict(_read_json(run_dir / "final.json", {})),
    )


def infer_vetoes(vetoed: list[int], records: list[dict[str, Any]],
                 iterations: list[dict[str, Any]]) -> list[VetoNote]:
    """Vetoes known only from the policy's state: the iteration is the one after the concept
    was last queried (a veto is applied at the next fetch), or None if it never was."""
    lemmas = {int(r["concept_index"]): str(r.get("concept", "")) for r in records}
    last_queried: dict[int, int] = {}
    for summary in iterations:
        for q in summary.get("queries", []):
            c = int(q["concept_index"])
            lemmas.setdefault(c, str(q.get("concept", "")))
            last_queried[c] = int(summary["iteration"])
    return [
        VetoNote(concept_index=c, concept=lemmas.get(c, f"concept {c}"),
                 iteration=last_queried.get(c),
                 detail="recorded in the checkpoint; vetoed after this iteration")
        for c in vetoed
    ]
