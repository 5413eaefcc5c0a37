"""Figures of the 2D studies (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIGURE_DPI = 110  # pixels per inch of every saved figure
MIN_LABEL_FONTSIZE = 5.0  # a row label that does not fit its row when wrapped shrinks down to this


def image_grid(
    path: Path,
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    captions: Sequence[Sequence[str]] | None = None,
    title: str = "",
    cell_inches: float = 1.4,
    overlay: Callable | None = None,
) -> None:
    """One row per entry of `rows` ([N, H, W, 3] in [0, 1]), one column per image; saves a PNG.

    `overlay(ax, row, col)`, if given, draws on each cell (pixel coordinates of the image). A row label longer than
    its row's height is wrapped at spaces (then shrunk) to fit beside its row (fit_row_labels).
    """
    n_rows, n_cols = len(rows), len(col_labels)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(cell_inches * n_cols + 0.9, cell_inches * n_rows + 0.6), squeeze=False
    )
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(np.clip(images[c], 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=10)
            if captions is not None and captions[r][c]:
                ax.set_xlabel(captions[r][c], fontsize=7)
            if overlay is not None:
                overlay(ax, r, c)
    if title:  # its top 0.08 in below the figure's (tight_layout leaves it room); a fraction overlaps a tall grid's labels
        fig.suptitle(title, fontsize=11, y=1.0 - 0.08 / fig.get_figheight(), va="top")
    fig.tight_layout()
    fit_row_labels(fig, [axes[r][0] for r in range(n_rows)])
    save_figure(fig, path)


def fit_row_labels(fig, axes: Sequence) -> None:
    """Make each of `axes`' y label (a row label, written upwards) no taller than its axes: wrapped at spaces into
    as few lines as fit, and if a word alone is still too tall, shrunk down to MIN_LABEL_FONTSIZE; the layout is
    then redone (tight_layout). Labels that fit are left as they are, and so is the figure when all of them fit."""
    for _ in range(3):  # the layout moves when labels widen (equal-aspect images shrink with the width left)
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        changed = False
        for ax in axes:
            label, room = ax.yaxis.label, ax.get_window_extent(renderer).height
            if not label.get_text() or label.get_window_extent(renderer).height <= room:
                continue
            changed = True
            text = " ".join(label.get_text().split())
            for width in range(len(text), 0, -1):
                label.set_text("\n".join(textwrap.wrap(text, width, break_long_words=False)))
                if label.get_window_extent(renderer).height <= room:
                    break
            while label.get_window_extent(renderer).height > room and label.get_fontsize() > MIN_LABEL_FONTSIZE:
                label.set_fontsize(max(MIN_LABEL_FONTSIZE, label.get_fontsize() - 0.5))
        if not changed:
            return
        fig.tight_layout()


def save_figure(fig, path: Path, dpi: int = FIGURE_DPI) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    from fsd2d.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


# In a notebook: the same figures, shown inline (IPython.display) instead of saved; what notebooks/ share.


def show_grid(rows: Sequence[np.ndarray], *args, **kwargs) -> None:
    """`image_grid(path, rows, *args, **kwargs)` (one row per entry of `rows`, [N, H, W, 3] in [0, 1]: its labels,
    captions, title, ...), shown in a notebook: the figure the commands save, drawn to a temporary PNG (nothing is
    left in the working directory) and displayed."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.png"
        image_grid(path, rows, *args, **kwargs)
        show_png(path)


def show_png(path: Path, title: str = "") -> None:
    """Show a PNG file (e.g. a figure a study wrote) in a notebook; `title`, if given, in bold above it."""
    from IPython.display import Image, Markdown, display

    if title:
        display(Markdown(f"**{title}**"))
    display(Image(data=Path(path).read_bytes(), format="png"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> str:
    """A markdown table: one line per row; floats with `digits` decimals, anything else as str()."""
    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def show_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> None:
    """Show `markdown_table(header, rows, digits)` in a notebook: rendered, with the same text as its plain-text
    form (so an executed notebook read as text, or a terminal, keeps the numbers)."""
    from IPython.display import display

    table = markdown_table(header, rows, digits)
    display({"text/markdown": table, "text/plain": table}, raw=True)
