"""Pieces of the self-contained HTML pages: figures and images as data URIs, tables, the page.

Nothing a page built here shows is fetched from elsewhere: plots are PNGs and images JPEGs
inlined as ``data:`` URIs, the style sheet is inline, and there is no script.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
        ".gif": "image/gif"}

CURVES: tuple[tuple[str, str], ...] = (
    ("knn_accuracy", "kNN accuracy (target)"),
    ("mean_concept_reward", "mean concept reward"),
    ("mean_image_reward", "mean image reward"),
    ("loss", "training loss"),
    ("kept_share", "share of images kept"),
)
"""The curves a run records (``metrics.json``), with their titles."""

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; margin: 0; background: #f6f7f9; }
main { max-width: 70rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 0.3rem; } h1 small { color: #667; font-weight: normal; }
h2 { font-size: 1.2rem; margin: 1.8rem 0 0.5rem; border-bottom: 1px solid #dde; }
h3 { font-size: 1rem; margin: 1rem 0 0.3rem; }
section { background: #fff; border: 1px solid #dde; border-radius: 6px; padding: 0.5rem 1rem 1rem;
  margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { text-align: left; padding: 0.2rem 0.6rem; border-bottom: 1px solid #e4e6ea; }
th { background: #f0f2f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; height: auto; }
.samples { display: flex; flex-wrap: wrap; gap: 0.5rem; }
figure.sample { margin: 0; width: 8.5rem; font-size: 0.75rem; color: #556; }
figure.sample img { width: 8.5rem; height: 8.5rem; object-fit: contain; background: #fff;
  border: 1px solid #dde; }
.hint { color: #667; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A figure for a cell: ``digits`` decimals for floats, a dash for missing or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def figure_uri(fig: Figure, *, dpi: int = 100) -> str:
    """The figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_uri(path: Path) -> str | None:
    """A stored image as a data URI; None when the file is missing or of an unknown kind."""
    mime = MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def plot(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


def iteration_axis(ax: Axes) -> None:
    """Label ``ax``'s x axis as iterations, whole numbers only."""
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def table(head: Sequence[str] | None, rows: Iterable[Sequence[Any]], *,
          numeric: Sequence[int] = ()) -> str:
    """An HTML table (no header row when ``head`` is None); cells are escaped."""
    out = ["<table>"]
    if head is not None:
        out += ["<thead><tr>", *[f"<th>{esc(h)}</th>" for h in head], "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = [f'<td class="num">{num(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
                 for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body`` with the inline style sheet."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def curve_points(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The finite points of one curve: (iterations, values)."""
    pts = [(int(h["iteration"]), float(h[key])) for h in history
           if isinstance(h.get(key), int | float) and math.isfinite(float(h[key]))]
    return [p[0] for p in pts], [p[1] for p in pts]
