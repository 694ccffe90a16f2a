"""Two or more runs on one page: their curves overlaid, and a table of their settings and
closing figures (for example explore against random on the same target)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ie_engine.export.html import (
    CURVES,
    curve_points,
    esc,
    figure_uri,
    iteration_axis,
    page,
    plot,
    table,
)
from ie_engine.export.records import RunData


def _labels(runs: list[RunData]) -> list[str]:
    """Each run's name, with its mode and seed when names alone would repeat."""
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.name} ({r.config.get('mode', '?')}, seed {r.config.get('seed', '?')})"
            for r in runs]


def overlay_figure(runs: list[RunData], labels: list[str]) -> str | None:
    present = [(k, t) for k, t in CURVES if any(curve_points(r.history, k)[0] for r in runs)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.3), squeeze=False)
    for ax, (key, title) in zip(axes[0], present, strict=True):
        for run, label in zip(runs, labels, strict=True):
            xs, ys = curve_points(run.history, key)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title, fontsize=10)
        iteration_axis(ax)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return figure_uri(fig)


def build_comparison(runs: list[RunData], *, title: str = "Runs compared") -> str:
    """The comparison page's HTML (self-contained); needs at least two runs."""
    if len(runs) < 2:
        raise ValueError("a comparison needs at least two runs")
    labels = _labels(runs)
    fig = overlay_figure(runs, labels)
    rows = []
    for run, label in zip(runs, labels, strict=True):
        last = run.history[-1] if run.history else {}
        rows.append((label, run.target.get("name", "?"), run.config.get("preset", "?"),
                     run.config.get("mode", "?"), run.config.get("seed", "?"),
                     run.iterations_done, len(run.images), len(run.kept),
                     last.get("knn_accuracy"), run.final.get("linear_probe_accuracy"),
                     last.get("mean_concept_reward")))
    settings = table(("run", "target", "preset", "mode", "seed", "iterations", "images",
                      "kept", "kNN accuracy (last)", "linear probe", "mean concept reward (last)"),
                     rows, numeric=(5, 6, 7, 8, 9, 10))
    per_iteration = []
    for key, name in CURVES:
        series = [dict(zip(*curve_points(r.history, key), strict=True)) for r in runs]
        its = sorted({i for s in series for i in s})
        if not its:
            continue
        per_iteration.append(f"<h3>{esc(name)}</h3>" + table(
            ("iteration", *labels),
            [(it, *[s.get(it) for s in series]) for it in its],
            numeric=tuple(range(len(runs) + 1)),
        ))
    body = (
        f"<h1>{esc(title)} <small>{len(runs)} runs</small></h1>"
        f"<section id=\"overlay\"><h2>Curves</h2>"
        + (plot(fig, "the runs' curves overlaid") if fig
           else "<p class=\"hint\">None of these runs has finished an iteration.</p>")
        + f"</section><section id=\"runs\"><h2>Runs</h2>{settings}</section>"
        f"<section id=\"figures\"><h2>Per iteration</h2>{''.join(per_iteration)}</section>"
    )
    return page(title, body)


def write_comparison(runs: list[RunData], path: Path, *, title: str = "Runs compared") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_comparison(runs, title=title), encoding="utf-8")
    return path


__all__ = ["build_comparison", "overlay_figure", "write_comparison"]
