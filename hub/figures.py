"""Figures drawn on the server with matplotlib and handed to the page as PNG images: they work offline (nothing
from a CDN), gr.Image gives them a download button, and they are sharp enough for a slide."""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from PIL import Image

SLIDE_DPI = 160


def figure_png(fig: Figure) -> Image.Image:
    """A matplotlib Figure as a PNG image. Build figures with `Figure(...)`, not pyplot: pyplot keeps global state,
    and visitors draw at the same time."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=SLIDE_DPI, bbox_inches="tight")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def heatmap(
    matrix: np.ndarray | Sequence[Sequence[float]],
    rows: Sequence[str],
    columns: Sequence[str],
    row_title: str,
    column_title: str,
    title: str = "",
    percent: bool = True,
    cmap: str = "Blues",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    annotate: bool | None = None,
    value_label: str = "",
) -> Image.Image:
    """A labelled heatmap: rows top to bottom, columns left to right; cells written in percent where they fit (the
    colour bar, labelled `value_label`, says what the numbers are: with `percent`, its ticks read 0% to 100%)."""
    matrix = np.asarray(matrix, dtype=float)
    n_rows, n_columns = matrix.shape
    annotate = (n_rows <= 16 and n_columns <= 16) if annotate is None else annotate
    # Grows with the matrix up to a slide's width; past ~48 labels only every k-th is written.
    size = (min(14.0, max(4.0, 0.45 * n_columns + 2.2)), min(10.0, max(3.2, 0.38 * n_rows + 1.6)))
    fig = Figure(figsize=size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    x_step, y_step = -(-n_columns // 48), -(-n_rows // 48)
    ax.set_xticks(range(0, n_columns, x_step), [str(c) for c in columns][::x_step], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(0, n_rows, y_step), [str(r) for r in rows][::y_step], fontsize=8)
    ax.set_xlabel(column_title)
    ax.set_ylabel(row_title)
    ax.xaxis.set_label_position("top")
    if title:
        ax.set_title(title, fontsize=10, pad=12)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    if percent:
        bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if value_label:
        bar.set_label(value_label, fontsize=8)
    if annotate:
        top = np.nanmax(matrix) if vmax is None else vmax
        for i in range(n_rows):
            for j in range(n_columns):
                value = matrix[i, j]
                if np.isnan(value):
                    continue
                text = f"{100 * value:.0f}" if percent else f"{value:.2f}"
                colour = "white" if top and value > 0.6 * top else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
    return figure_png(fig)
