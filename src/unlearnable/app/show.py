"""`unlearnable show`: look at what a poison and a defense do to the images."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from unlearnable.analysis.metrics import psnr
from unlearnable.data import ImageDataset, load_saved, to_unit_float
from unlearnable.data.lineage import load_source
from unlearnable.defenses import build_defense
from unlearnable.errors import UserInputError
from unlearnable.figures import sample_grid
from unlearnable.io import check_file_output


def pick_samples(ds: ImageDataset, per_class: int, max_classes: int) -> dict[int, list[int]]:
    """Per class (the first `max_classes`), the first `per_class` poisoned indices (any if none)."""
    poisoned = set(ds.meta.get("poisoned_indices", []))
    labels = ds.labels.tolist()
    picks: dict[int, list[int]] = {}
    for c in range(min(ds.num_classes, max_classes)):
        members = [i for i, y in enumerate(labels) if y == c]
        chosen = [i for i in members if i in poisoned][:per_class] or members[:per_class]
        if chosen:
            picks[c] = chosen
    return picks


def show_command(
    saved: str | os.PathLike,
    out: str | os.PathLike | None = None,
    defense: str = "rsk+ff",
    per_class: int = 1,
    max_classes: int = 10,
    data_root: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a PNG grid of clean vs poisoned vs defended samples per class; returns its path.

    The picture goes to `out` (default `default_picture`), which may not lie inside the saved
    dataset and may replace only a picture this tool wrote.
    """
    if per_class < 1 or max_classes < 1:
        raise UserInputError("--per-class and --classes must be at least 1")
    out = Path(out) if out is not None else default_picture(saved)
    check_file_output(out, inputs=[saved])
    protected = load_saved(saved)
    clean = load_source(protected, data_root)
    transform = build_defense(defense)
    generator = torch.Generator().manual_seed(seed)
    picks = pick_samples(protected, per_class, max_classes)
    kinds = (["clean"] if clean is not None else []) + [protected.meta.get("attack", "saved"), defense]
    rows = {}
    for c, idx in picks.items():
        poisoned = to_unit_float(protected.images[idx])
        defended = transform(poisoned, generator)
        images = []
        for k in range(len(idx)):
            images += ([to_unit_float(clean.images[idx[k]])] if clean is not None else []) + [poisoned[k], defended[k]]
        rows[class_label(protected, c)] = images
    title = describe(protected)
    if clean is not None:
        title += f"   PSNR poisoned vs clean {psnr(protected.images, clean.images):.1f} dB"
    sample_grid(rows, kinds * per_class, out, title)
    return out


def default_picture(saved: str | os.PathLike) -> Path:
    """Where `show` writes by default: DIR-samples.png beside the saved dataset DIR, never inside it
    (DIR holds the private key, so nothing is added to it)."""
    saved = Path(saved)
    return saved.parent / f"{saved.resolve().name}-samples.png"


def class_label(ds: ImageDataset, c: int) -> str:
    """The name of class `c`: its folder name, and for ImageNet its readable name ("n01440764 tench")."""
    names = (ds.meta.get("imagenet") or {}).get("class_names")
    return f"{ds.classes[c]} {names[c].split(',')[0]}" if names else ds.classes[c]


def describe(ds: ImageDataset) -> str:
    """One line: attack and its parameters, e.g. 'cuda k=3 p_b=0.3 seed=0 mix=1.0', 'lsp eps=0.02353 patch_size=8 seed=0 mix=1.0'."""
    params = ds.meta.get("params", {})
    parts = [ds.meta.get("attack", "clean")]
    if "kernel_size" in params:
        parts += [f"k={params['kernel_size']}", f"p_b={params['blur_parameter']}"]
    parts += [f"{name}={params[name]:.4g}" for name in ("eps", "norm", "patch_size") if name in params]
    if "seed" in ds.meta:
        parts.append(f"seed={ds.meta['seed']}")
    if "mix" in params:
        parts.append(f"mix={params['mix']}")
    if params.get("grayscale"):
        parts.append("grayscale")
    return " ".join(parts)
