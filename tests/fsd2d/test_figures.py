"""The shared grid figure (fsd2d.figures.image_grid): what every summary.png, samples.png and docs grid is drawn by."""
from __future__ import annotations

import numpy as np
import pytest

from fsd2d import figures


@pytest.mark.parametrize("n_rows", [1, 4, 16])
def test_grid_title_sits_above_the_column_labels_at_any_height(tmp_path, monkeypatch, n_rows):
    """The title is inside the figure and clear of the column labels below it, for a 1-row grid and for gen-3d's
    16-seed summary.png (23 in tall, where a title placed as a fraction of the height fell onto the labels)."""
    figs = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: figs.append(fig))
    rows = [np.full((8, 32, 32, 3), 0.5)] * n_rows
    figures.image_grid(tmp_path / "g.png", rows, [f"seed {s}" for s in range(n_rows)],
                       [f"az {45 * c}" for c in range(8)], title="'mushroom' - fsd, 150 steps")
    fig = figs[0]
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    height = fig.get_figheight() * fig.dpi
    assert title.y1 <= height + 0.5, (title, height)
    for ax in fig.axes[:8]:
        column = ax.title.get_window_extent(renderer)
        assert title.y0 >= column.y1, (ax.title.get_text(), title, column)
