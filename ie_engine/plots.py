"""PNG plots of a run folder: learning curves, and the top concepts over iterations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """One panel per recorded curve (kNN accuracy when labels exist, rewards, loss, kept share)."""
    keys = [
        ("knn_accuracy", "kNN accuracy (target)"),
        ("mean_concept_reward", "mean concept reward"),
        ("mean_image_reward", "mean image reward"),
        ("loss", "training loss"),
        ("kept_share", "share of images kept"),
    ]
    present = [(k, t) for k, t in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4 * max(1, len(present)), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (key, title) in zip(axes, present, strict=False):
        pts = [(h["iteration"], h[key]) for h in history if key in h and h[key] == h[key]]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_top_concepts(run_dir: Path, path: Path, *, top: int = 20) -> Path:
    """Heat map: the best concepts by observed reward (rows) against iterations (columns)."""
    rewards: dict[str, dict[int, float]] = {}
    files = sorted((run_dir / "iterations").glob("[0-9][0-9][0-9][0-9].json"))
    for f in files:
        data = json.loads(f.read_text())
        for q in data["queries"]:
            r = q.get("observed_reward")
            if r is not None:
                rewards.setdefault(q["concept"], {})[data["iteration"]] = r
    best = sorted(rewards, key=lambda c: -max(rewards[c].values()))[:top]
    iters = [json.loads(f.read_text())["iteration"] for f in files]
    grid = np.full((len(best), max(1, len(iters))), np.nan)
    for r, c in enumerate(best):
        for j, it in enumerate(iters):
            grid[r, j] = rewards[c].get(it, np.nan)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * max(1, len(iters)), 1 + 0.3 * max(1, len(best))))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(best)), best, fontsize=8)
    ax.set_xticks(range(len(iters)), [str(i) for i in iters])
    ax.set_xlabel("iteration")
    ax.set_title("top concepts: observed reward when queried")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
