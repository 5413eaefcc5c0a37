"""Figures of the 2D studies (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIGURE_DPI = 110  # pixels per inch of every saved figure


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

    `overlay(ax, row, col)`, if given, draws on each cell (pixel coordinates of the image).
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
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = FIGURE_DPI) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    from fsd2d.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
