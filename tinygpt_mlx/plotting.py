"""Figures for every plot the package writes: one backend, resolution, layout and file format policy.

Figures are `matplotlib.figure.Figure` objects, never pyplot's: saving one renders with Agg (PNG) or the
SVG writer directly, so no GUI backend is ever chosen (headless machines, CI) and no global figure state
leaks between calls. Files carry no creation date and SVG element ids are salted with a constant, so
re-running a command gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

FORMATS = ("png", "svg")
DPI = 120


def new_figure(figsize: tuple[float, float] = (6.4, 4.0), ncols: int = 1) -> tuple[Figure, Any]:
    """A detached figure (constrained layout: labels never overlap) and its axes, one or ncols side by side."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Figure, out_dir: str | Path, name: str, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write fig as out_dir/name.<format> for each format (out_dir created), tightly cropped; the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else None  # PNG from Agg carries no date to begin with
        with rc_context({"svg.hashsalt": "tinygpt"}):
            fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths
