"""The experiment pages' figures: one row of panels (one per corpus), saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def panels(count: int, width: float, height: float = 3.4, sharey: bool = True
           ) -> tuple[Any, list[Any]]:
    """A figure with `count` panels side by side, `width` inches each; (figure, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False,
                             sharey=sharey)
    return fig, list(axes[0])


def save(fig: Any, path: Path, top: float = 1.0) -> None:
    """Lay out (leaving `top` of the height to the panels, e.g. for a figure legend), write
    and close."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=110)
    plt.close(fig)
