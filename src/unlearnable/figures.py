"""Pictures: the clean / poisoned / defended sample grid, and `png_bytes` for any figure.

The one place that selects matplotlib's Agg backend: import pyplot after this module.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from unlearnable.io import PNG_SOFTWARE, atomic_write_bytes  # noqa: E402


def png_bytes(fig: plt.Figure, dpi: int = 100) -> bytes:
    """`fig` as PNG bytes (with the project's Software tag), and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)
    return buffer.getvalue()


def _show(ax, image: torch.Tensor) -> None:
    """Draw one C×H×W float image in [0,1] without smoothing."""
    array = image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def sample_grid(
    rows: dict[str, list[torch.Tensor]], columns: list[str], path: str | os.PathLike, title: str = ""
) -> None:
    """Write a PNG grid: one row per class, one column per image kind (e.g. clean, poisoned, defended).

    Args:
        rows: class name → list of float C×H×W images in [0, 1], one per entry of `columns`
            (sizes may differ between columns, e.g. 32×32 clean next to 30×30 sharpened).
        columns: column titles.
        path: output PNG, written atomically.
    """
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols + 1.2, 1.3 * n_rows + 0.6), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, image in enumerate(images):
            _show(axes[r][c], image)
            if r == 0:
                axes[r][c].set_title(columns[c], fontsize=8)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig, dpi=110))
