"""One self-contained HTML page of a run: curves, the concepts found over time, the vetoes and
their effect, and sample images of the best concepts (everything inline, nothing fetched)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ie_engine.export.html import (
    CURVES,
    curve_points,
    esc,
    figure_uri,
    image_uri,
    iteration_axis,
    num,
    page,
    plot,
    table,
)
from ie_engine.export.records import ExportImage, RunData


def _observed(run: RunData) -> dict[str, dict[int, float]]:
    """Concept -> {iteration: observed reward} from the iteration summaries."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for summary in run.iterations:
        for q in summary.get("queries", []):
            r = q.get("observed_reward")
            if r is not None and math.isfinite(float(r)):
                out[str(q.get("concept", ""))][int(summary["iteration"])] = float(r)
    return dict(out)


def curves_figure(run: RunData) -> str | None:
    present = [(k, t) for k, t in CURVES if curve_points(run.history, k)[0]]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(3.4 * len(present), 2.9), squeeze=False)
    veto_its = sorted({v.iteration for v in run.vetoes if v.iteration is not None})
    for ax, (key, title) in zip(axes[0], present, strict=True):
        xs, ys = curve_points(run.history, key)
        ax.plot(xs, ys, marker="o", color="#2a5bd7")
        for it in veto_its:
            ax.axvline(it + 0.5, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        iteration_axis(ax)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_uri(fig)


def discovery_figure(run: RunData, observed: dict[str, dict[int, float]]) -> str | None:
    """Concepts queried so far, and those scoring in the run's top quarter, per iteration."""
    if not observed:
        return None
    all_rewards = [r for per in observed.values() for r in per.values()]
    good = float(np.quantile(all_rewards, 0.75))
    its = sorted({int(s["iteration"]) for s in run.iterations})
    seen: set[str] = set()
    found: set[str] = set()
    n_seen, n_found = [], []
    for it in its:
        for concept, per in observed.items():
            if it in per:
                seen.add(concept)
                if per[it] >= good:
                    found.add(concept)
        n_seen.append(len(seen))
        n_found.append(len(found))
    fig, ax = plt.subplots(figsize=(5.2, 2.9))
    ax.plot(its, n_seen, marker="o", label="concepts queried")
    ax.plot(its, n_found, marker="s", label=f"reward >= {good:.3f} (top quarter)")
    iteration_axis(ax)
    ax.set_ylabel("concepts (cumulative)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def heatmap_figure(observed: dict[str, dict[int, float]], its: list[int],
                   top: int = 20) -> str | None:
    if not observed or not its:
        return None
    best = sorted(observed, key=lambda c: -max(observed[c].values()))[:top]
    grid = np.array([[observed[c].get(it, np.nan) for it in its] for c in best])
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * len(its), 1.0 + 0.28 * len(best)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(best)), best, fontsize=8)
    ax.set_xticks(range(len(its)), [str(i) for i in its])
    iteration_axis(ax)
    ax.set_title("best concepts: observed reward when queried", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return figure_uri(fig)


def _summary(run: RunData) -> str:
    cfg = run.config
    target = run.target
    last = run.history[-1] if run.history else {}
    rows: list[tuple[str, Any]] = [
        ("target", target.get("name", "unknown")
         + (f" ({target['images']} images)" if target.get("images") else "")),
        ("preset / mode / seed", f"{cfg.get('preset', '?')} / {cfg.get('mode', '?')} / "
                                 f"{cfg.get('seed', '?')}"),
        ("iterations", f"{run.iterations_done} of {cfg.get('iterations', '?')}"),
        ("queries per iteration", cfg.get("policy", {}).get("queries_per_iteration", "?")),
        ("images downloaded / kept", f"{len(run.images)} / {len(run.kept)}"),
        ("vetoed concepts", len([v for v in run.vetoes if v.action == "veto"])),
    ]
    for key, title in CURVES:
        if key in last:
            rows.append((f"{title}, last iteration", num(last[key])))
    for key in ("linear_probe_accuracy", "linear_probe_sd"):
        if run.final.get(key) is not None:
            rows.append((key.replace("_", " "), num(run.final[key])))
    return table(None, rows)


def _iteration_table(run: RunData, observed: dict[str, dict[int, float]]) -> str:
    first_seen: dict[str, int] = {c: min(per) for c, per in observed.items()}
    rows = []
    for s in run.iterations:
        it = int(s["iteration"])
        queried = [(str(q.get("concept", "")), q.get("observed_reward")) for q in s["queries"]]
        scored = [(c, float(r)) for c, r in queried if r is not None and math.isfinite(float(r))]
        best = sorted(scored, key=lambda p: -p[1])[:3]
        new = sum(1 for c in {c for c, _ in queried} if first_seen.get(c) == it)
        rows.append((it, s.get("model", ""), len(queried), new, s.get("n_images", 0),
                     s.get("n_leaked", 0), s.get("mean_concept_reward"),
                     ", ".join(f"{c} ({r:.3f})" for c, r in best)))
    return table(("iteration", "policy", "queries", "new concepts", "images", "target leaks",
                  "mean concept reward", "best concepts"), rows, numeric=(0, 2, 3, 4, 5, 6))


def _veto_section(run: RunData) -> str:
    if not run.vetoes:
        return "<p class=\"hint\">No concept was vetoed in this run.</p>"
    by_concept: dict[int, list[ExportImage]] = defaultdict(list)
    for img in run.images:
        by_concept[img.concept_index].append(img)
    mean_reward = {int(h["iteration"]): h.get("mean_concept_reward") for h in run.history}
    rows = []
    for v in run.vetoes:
        queried = [int(s["iteration"]) for s in run.iterations
                   for q in s.get("queries", []) if int(q["concept_index"]) == v.concept_index]
        at = v.iteration if v.iteration is not None else -1
        imgs = by_concept.get(v.concept_index, [])
        rewards = [i.relevance for i in imgs if i.relevance is not None]
        rows.append((
            v.concept, v.action, "?" if v.iteration is None else v.iteration,
            sum(1 for i in queried if i <= at), sum(1 for i in queried if i > at),
            len(imgs), sum(1 for i in imgs if i.kept),
            max(rewards) if rewards else None,
            mean_reward.get(at), mean_reward.get(at + 1), v.detail,
        ))
    return (
        "<p>A veto takes effect at the run's next fetch: the concept is never sampled again, "
        "its images leave the replay buffer (kept = 0) and the policy learns it as a poor "
        "choice. Dashed red lines on the curves mark when.</p>"
        + table(("concept", "action", "asked at iteration", "queried before", "queried after",
                 "images", "kept now", "best image reward", "mean concept reward then",
                 "next iteration", "note"), rows, numeric=(3, 4, 5, 6, 7, 8, 9))
    )


def _samples(run: RunData, observed: dict[str, dict[int, float]], top: int,
             per_concept: int) -> str:
    vetoed = {v.concept for v in run.vetoes if v.action == "veto"}
    by_concept: dict[str, list[ExportImage]] = defaultdict(list)
    for img in run.images:
        if img.relevance is not None:
            by_concept[img.concept].append(img)
    ranked = sorted((c for c in observed if c in by_concept and c not in vetoed),
                    key=lambda c: -max(observed[c].values()))[:top]
    if not ranked:
        return "<p class=\"hint\">No scored image yet.</p>"
    parts = []
    for concept in ranked:
        imgs = sorted(by_concept[concept], key=lambda i: -(i.relevance or 0.0))[:per_concept]
        cells = []
        for img in imgs:
            uri = image_uri(img.file)
            if uri is None:
                continue
            caption = f"{num(img.relevance)} &middot; {esc(img.license or '?')}"
            if img.kept:
                caption += " &middot; kept"
            cells.append(f'<figure class="sample"><img src="{uri}" alt="{esc(img.title)}">'
                         f"<figcaption>{esc(img.title[:60])}<br>{caption}</figcaption></figure>")
        best = max(observed[concept].values())
        parts.append(f"<h3>{esc(concept)} <small>best concept reward {best:.3f}, "
                     f"{len(by_concept[concept])} images</small></h3>"
                     f"<div class=\"samples\">{''.join(cells)}</div>")
    return "".join(parts)


def build_report(run: RunData, *, top_concepts: int = 6, samples_per_concept: int = 6) -> str:
    """The report's HTML (one string, no external reference)."""
    observed = _observed(run)
    its = sorted({int(s["iteration"]) for s in run.iterations})
    curves = curves_figure(run)
    discovery = discovery_figure(run, observed)
    heat = heatmap_figure(observed, its)
    body = [
        f"<h1>{esc(run.name)} <small>Internet Explorer run report</small></h1>",
        f"<section id=\"summary\"><h2>Summary</h2>{_summary(run)}</section>",
        "<section id=\"curves\"><h2>Curves</h2>"
        + (plot(curves, "learning curves per iteration") if curves
           else "<p class=\"hint\">No iteration has finished yet.</p>") + "</section>",
        "<section id=\"concepts\"><h2>Concepts found over time</h2>"
        + (plot(discovery, "concepts queried and found per iteration") if discovery else "")
        + (plot(heat, "best concepts' observed reward per iteration") if heat else "")
        + _iteration_table(run, observed) + "</section>",
        f"<section id=\"vetoes\"><h2>Vetoes and their effect</h2>{_veto_section(run)}</section>",
        "<section id=\"samples\"><h2>Sample images of the best concepts</h2>"
        + _samples(run, observed, top_concepts, samples_per_concept) + "</section>",
    ]
    return page(f"{run.name}: run report", "".join(body))


def write_report(run: RunData, path: Path) -> Path:
    """Write :func:`build_report`'s page to ``path`` (``.html``); return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(run), encoding="utf-8")
    return path
