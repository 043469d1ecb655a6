"""Shared matplotlib helpers for the pictures every layer writes (headless, atomic PNGs)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from spinenav.atomic import atomic_output  # noqa: E402


def label_edges(ax, left: str, right: str, top: str, bottom: str, *, colour: str = "yellow",
                fontsize: int = 13) -> None:
    """Write the patient-direction letters at the four edges of an image panel, so a flipped
    axis shows at a glance."""
    for text, xy in ((left, (0.01, 0.5)), (right, (0.97, 0.5)), (top, (0.5, 0.96)), (bottom, (0.5, 0.01))):
        ax.text(*xy, text, color=colour, fontsize=fontsize, fontweight="bold", transform=ax.transAxes,
                ha="left" if xy[0] < 0.5 else "right" if xy[0] > 0.5 else "center")


def save_figure(fig, path: str | os.PathLike[str], *, dpi: int = 90) -> Path:
    """Save a matplotlib figure as PNG atomically (black background) and close it."""
    fig.tight_layout()
    out = Path(path)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor="black")
    plt.close(fig)
    return out
