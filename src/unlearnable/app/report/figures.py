"""The report's figures as PNG bytes: accuracy curves, and per-class log-power spectra of a poisoned set."""

from __future__ import annotations

import numpy as np
import torch

from unlearnable.analysis.spectra import log_power_spectrum
from unlearnable.app.report.render import DASH, number
from unlearnable.app.report.runs import DEFENSE, Run
from unlearnable.app.show import pick_samples
from unlearnable.data import ImageDataset, to_unit_float
from unlearnable.defenses import build_defense
from unlearnable.figures import plt, png_bytes  # figures selects the Agg backend before pyplot loads

SPECTRA_PER_CLASS = 500
MAX_CLASSES = 10
LOG_EPS = 1e-8
"""The floor of the spectra (`log_power_spectrum`): images in [0, 1], so −18.4, far below any image's power."""
DPI = 110


def curves_png(runs: list[Run], several_datasets: bool) -> bytes | None:
    """Test accuracy and train loss against epoch for every run, or None when no run has epochs."""
    runs = [run for run in runs if run.epochs]
    if not runs:
        return None
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for run in runs:
        label = run.label + (f" [{run.dataset}]" if several_datasets else "")
        style = "-" if run.complete else "--"
        for ax, key in ((acc_ax, "test_acc"), (loss_ax, "train_loss")):
            points = [(e.get("epoch", i + 1), e.get(key)) for i, e in enumerate(run.epochs)]
            points = [(x, y) for x, y in points if number(x) != DASH and number(y) != DASH]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, marker="o" if len(xs) < 15 else None, markersize=3, label=label)
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (clean test set)")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Train loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:  # as many columns as fit the figure's width at this font size
        ncols = max(1, min(len(handles), 160 // (max(map(len, labels)) + 8)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8.5, frameon=False)
    return png_bytes(fig, dpi=DPI)


def mean_log_power(images: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """Mean over images and channels of log(|F|² + LOG_EPS), F the centred 2-D FFT; float N×C×H×W → H×W."""
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for start in range(0, len(images), chunk):
        total += log_power_spectrum(images[start : start + chunk], LOG_EPS, centred=True).double().sum(dim=(0, 1))
    return (total / (len(images) * images.shape[1])).numpy()


def spectra_by_class(
    protected: ImageDataset, clean: ImageDataset | None, seed: int = 0, chunk: int = 128
) -> dict[str, dict[str, np.ndarray]]:
    """Per class (up to MAX_CLASSES; up to SPECTRA_PER_CLASS of its poisoned images): the mean log-power
    spectra of the clean, poisoned and defended images and the poisoned − clean difference."""
    defense, generator = build_defense(DEFENSE), torch.Generator().manual_seed(seed)
    spectra = {}
    for c, idx in pick_samples(protected, SPECTRA_PER_CLASS, MAX_CLASSES).items():
        poisoned = to_unit_float(protected.images[idx])
        defended = torch.cat([defense(poisoned[s : s + chunk], generator) for s in range(0, len(idx), chunk)])
        row = {"poisoned": mean_log_power(poisoned), "defended": mean_log_power(defended)}
        if clean is not None:
            row["clean"] = mean_log_power(to_unit_float(clean.images[idx]))
            row["difference"] = row["poisoned"] - row["clean"]
        spectra[protected.classes[c]] = row
    return spectra


def spectra_png(spectra: dict[str, dict[str, np.ndarray]], attack: str) -> bytes:
    """Rows = classes, columns = clean | poisoned | defended | poisoned − clean, one colour scale per column."""
    keys = [k for k in ("clean", "poisoned", "defended", "difference") if k in next(iter(spectra.values()))]
    titles = {
        "clean": "clean",
        "poisoned": f"poisoned ({attack})",
        "defended": f"defended ({DEFENSE})",
        "difference": "poisoned − clean",
    }
    n_rows, n_cols = len(spectra), len(keys)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.7 * n_cols + 1.2, 1.6 * n_rows + 1.1), squeeze=False, layout="constrained"
    )
    for j, key in enumerate(keys):
        stack = np.stack([row[key] for row in spectra.values()])
        if key == "difference":
            bound = float(np.abs(stack).max()) or 1.0
            scale = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
        else:
            scale = {"cmap": "viridis", "vmin": float(stack.min()), "vmax": float(stack.max())}
        for i, (name, row) in enumerate(spectra.items()):
            ax = axes[i][j]
            image = ax.imshow(row[key], interpolation="nearest", **scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[key], fontsize=10)
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        bar = fig.colorbar(image, ax=axes[:, j], location="bottom", fraction=0.5 / (1.6 * n_rows + 1.1), aspect=12)
        bar.ax.tick_params(labelsize=8)
    fig.suptitle("Per-class mean log-power spectrum, log(|FFT|² + ε), centred", fontsize=11)
    return png_bytes(fig, dpi=90)
