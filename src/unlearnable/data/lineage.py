"""Lineage: where a saved dataset came from, and loading that clean source again."""

from __future__ import annotations

import warnings

import torch

from unlearnable.data import DATASET_NAMES, ImageDataset, load_dataset
from unlearnable.errors import UserInputError


def load_source(protected: ImageDataset, data_root: str | None) -> ImageDataset | None:
    """The clean training split a saved dataset was made from, or None (with a UserWarning saying why) if it is unavailable or no longer matches."""
    source = protected.meta.get("source") or {}
    if source.get("kind") in DATASET_NAMES:  # a named dataset: its files were found under "path"
        spec, data_root = source["kind"], data_root or source.get("path")
    else:
        spec = source.get("path") or source.get("spec")
    if spec is None:
        return None
    try:
        clean = load_dataset(spec, "train", data_root, image_size=source.get("image_size"))
    except UserInputError as e:
        warnings.warn(f"clean source not used: {e}", stacklevel=2)
        return None
    if len(clean) != len(protected) or not torch.equal(clean.labels, protected.labels):
        warnings.warn(f"clean source not used: {spec} no longer matches the saved dataset", stacklevel=2)
        return None
    return clean
