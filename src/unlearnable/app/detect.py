"""`unlearnable detect`: load the data and its reference, run the detector, write the evidence files.

The statistics and the decision are the library's `unlearnable.analysis.detect`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from unlearnable.analysis.detect import MAX_IMAGES, Detection, check_max_images, detect, full_plane
from unlearnable.data import load_dataset
from unlearnable.data.imagefolder import check_image_size
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.io import atomic_write_bytes, write_json
from unlearnable.training.config import resolve_device


def spectra_png(detection: Detection, h: int, w: int, max_classes: int = 20) -> bytes:
    """PNG: per class, the class-wise log-spectrum shift against the reference and its kernel-basis fit."""
    import matplotlib.pyplot as plt

    from unlearnable.figures import png_bytes  # selects the Agg backend before pyplot is imported

    s = detection.spectral
    shown = s.classes[:max_classes]
    maps = [full_plane(x[: len(shown)], h, w) for x in (s.ratio, s.fitted)]
    limit = float(torch.nan_to_num(maps[0].abs(), nan=0.0).quantile(0.99)) or 1.0
    fig, axes = plt.subplots(2, len(shown), figsize=(1.25 * len(shown) + 1.4, 3.2), squeeze=False, layout="constrained")
    for j, c in enumerate(shown):
        for r, label in enumerate(("measured", "kernel fit")):
            ax = axes[r][j]
            image = ax.imshow(maps[r][j].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(detection.classes[c][:12], fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="log power ratio (nats)")
    fig.suptitle(f"class-wise log-spectrum shift vs the reference (centre = DC); {detection.verdict()}", fontsize=8)
    return png_bytes(fig, dpi=110)


def detect_command(
    spec: str,
    reference: str | None = None,
    data_root: str | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    max_images: int = MAX_IMAGES,
    device: str | None = None,
    image_size: int | None = None,
) -> Detection:
    """Load DATA's train split and the reference, detect, optionally write OUT/detect.json and OUT/detect_spectra.png.

    The reference is DATA's test split by default; a given `reference` contributes its test split when it
    has one (a named dataset, a saved dataset, an ImageFolder with test/), else all its images.
    `image_size` S reads DATA and the reference at S×S (bilinear stretch, `load_dataset`): needed for a
    collection of mixed image sizes. Check a protected set at the size it was protected at: shrinking
    it also shrinks the blur the statistics look for. Every argument is checked before any data is read.
    """
    check_max_images(max_images)
    check_image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"--seed {seed!r} is invalid; give an integer >= 0")
    resolve_device(device)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserInputError(f"--out {out} is a file; give a directory (it is created if missing)")
    data = load_dataset(spec, "train", data_root, image_size=image_size)
    if reference is None:
        try:
            ref = load_dataset(spec, "test", data_root, image_size=image_size)
        except MissingSplitError:
            raise UserInputError(
                f"{spec} has no test split to serve as the clean reference; pass --reference SPEC "
                "(clean images of the same classes and size)"
            ) from None
        names = (f"{spec} train split", f"{spec} test split")
    else:
        try:
            ref = load_dataset(reference, "test", data_root, image_size=image_size)
            names = (f"{spec} train split", f"{reference} test split")
        except MissingSplitError:
            ref = load_dataset(reference, "train", data_root, image_size=image_size)
            names = (f"{spec} train split", reference)
    detection = detect(data, ref, seed, max_images, device, names)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "detect.json", detection.to_json())
        atomic_write_bytes(out / "detect_spectra.png", spectra_png(detection, *data.shape[1:]))
    return detection
