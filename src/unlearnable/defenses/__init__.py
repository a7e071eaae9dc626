"""Defenses by name, and their composition into chains ("rsk+ff", "deconv+rsk+ff+at-linf").

An image defense is a `base.Transform`, in the style of ``torchvision.transforms.v2``:
``defense(x, generator=None) -> Tensor`` with `x` a float B×C×H×W batch in [0, 1] on any device,
or one float C×H×W image (per-sample use inside a torchvision pipeline), returning the same kind
on the same device (sharpening with ``padding="valid"`` shrinks H×W by 2). Random defenses draw
their parameters (``make_params``) from the given `generator`, which must live on the input's
device, or, when it is None, from torch's global generator there. Training-only defenses mix
labels, run the model in the loop, or transform the whole training set once; each registered name
carries its ``stage`` (see ``STAGES``). Every defense declares its ``PARAMETER_CONSTRAINTS``, checked
when it is built. Adding one is a module plus one ``DEFENSES.add`` line here (see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from unlearnable.registry import Registry, lazy_exports

if TYPE_CHECKING:
    import torch


class Defense(Protocol):
    """What every image defense is: a callable over float B×C×H×W batches with a readable repr
    (`base.Transform` implements it; any such callable can join a chain)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


STAGES = {
    "before-crop": "before crop/flip",
    "after-crop": "after crop/flip",
    "mixing": "label mixing, at most one",
    "hook": "model in the loop, at most one",
    "preprocess": "preprocessing once before training, at most one, first",
}
"""Where the trainer applies a defense of each stage, in pipeline order (`chain.TrainingDefense`)."""

DEFENSES = Registry("defense")
_add = DEFENSES.add
_add(
    "rsk",
    "unlearnable.defenses.sharpen:RandomSharpen",
    "random sharpening kernel per image (Kim & Sandoval-Segura 2024)",
    stage="before-crop",
)
_add(
    "ssk",
    "unlearnable.defenses.sharpen:StaticSharpen",
    "one static sharpening kernel (Kim & Sandoval-Segura 2024)",
    stage="before-crop",
)
_add(
    "ff",
    "unlearnable.defenses.frequency:FrequencyFilter",
    "DCT low-pass filter (Kim & Sandoval-Segura 2024)",
    stage="before-crop",
)
_add(
    "coin",
    "unlearnable.defenses.coin:Coin",
    "random per-pixel displacement with bilinear interpolation (COIN)",
    stage="after-crop",
)
_add(
    "jpeg",
    "unlearnable.defenses.iss:JpegCompression",
    "JPEG round trip, quality 10 (ISS, Liu et al. 2023)",
    stage="before-crop",
)
_add("gray", "unlearnable.defenses.iss:Grayscale", "grayscale (ISS, Liu et al. 2023)", stage="before-crop")
_add(
    "bdr",
    "unlearnable.defenses.iss:BitDepthReduction",
    "bit-depth reduction (ISS, Liu et al. 2023)",
    stage="before-crop",
)
_add(
    "cutout",
    "unlearnable.defenses.cutout:Cutout",
    "one zeroed square per image (DeVries & Taylor 2017)",
    stage="after-crop",
)
_add("mixup", "unlearnable.defenses.mixing:MixUp", "MixUp of images and labels (Zhang et al. 2018)", stage="mixing")
_add("cutmix", "unlearnable.defenses.mixing:CutMix", "CutMix of images and labels (Yun et al. 2019)", stage="mixing")
_add(
    "at-linf",
    "unlearnable.defenses.hooks:linf_adversarial_training",
    "PGD adversarial training, L∞ (Madry et al. 2018)",
    stage="hook",
)
_add("at-l2", "unlearnable.defenses.hooks:l2_adversarial_training", "PGD adversarial training, L2", stage="hook")
_add(
    "dat",
    "unlearnable.defenses.dat:DeconvolutionAT",
    "deconvolution-based adversarial training (the CUDA paper)",
    stage="hook",
)
_add(
    "ueraser",
    "unlearnable.defenses.ueraser:UEraserMax",
    "UEraser-Max: worst of K strong augmentations (Qin et al. 2023)",
    stage="hook",
)
_add(
    "deconv",
    "unlearnable.defenses.deconv:Deconvolve",
    "estimate each class's blur from the zero-padded border and invert it (this project)",
    stage="preprocess",
)
_add(
    "deconv-spectrum",
    "unlearnable.defenses.deconv:DeconvolveSpectrum",
    "estimate each class's blur from its power spectrum and invert it (this project)",
    stage="preprocess",
)
_add(
    "ortho-proj",
    "unlearnable.defenses.projection:OrthogonalProjection",
    "project out a linear model's class directions (Sandoval-Segura et al. 2023)",
    stage="preprocess",
)
_add(
    "dvae",
    "unlearnable.defenses.dvae:DVAE",
    "replace each image by a rate-constrained D-VAE's purification (Yu et al. 2024)",
    stage="preprocess",
)
_add(
    "diffpure",
    "unlearnable.defenses.diffusion:DiffusionPurification",
    "diffuse to t* and denoise with a DDPM trained on clean images (AVATAR 2024, ECLIPSE 2024)",
    stage="preprocess",
)
_add(
    "notch",
    "unlearnable.defenses.notch:Notch",
    "remove each class's peak low frequency: the adaptive defense against grating (this project)",
    stage="preprocess",
)
_add(
    "unshift",
    "unlearnable.defenses.colour:ColourUnshift",
    "find each class's colour shift from its clipped pixels and undo it: the adaptive defense against DUNE (this project)",
    stage="preprocess",
)
del _add

_EXPORTS = {
    **{name: "unlearnable.defenses.base" for name in ("Configurable", "Transform", "resolve_generator")},
    **{
        name: "unlearnable.defenses.chain"
        for name in ("Compose", "Identity", "TrainingDefense", "build_defense", "defense_kinds", "training_defense")
    },
    **{
        name: "unlearnable.defenses.sharpen"
        for name in (
            "PADDING_MODES",
            "RandomSharpen",
            "StaticSharpen",
            "sample_sharpen_kernels",
            "sharpen",
            "static_sharpen_kernel",
        )
    },
    **{
        name: "unlearnable.defenses.frequency"
        for name in ("FrequencyFilter", "dct_low_pass", "dct_matrix", "kept_frequencies")
    },
    **{name: "unlearnable.defenses.coin" for name in ("Coin", "displace", "sample_displacements")},
    **{
        name: "unlearnable.defenses.iss"
        for name in ("BitDepthReduction", "Grayscale", "JpegCompression", "jpeg_round_trip")
    },
    "Cutout": "unlearnable.defenses.cutout",
    **{name: "unlearnable.defenses.mixing" for name in ("CutMix", "MixUp", "Mixing")},
    **{name: "unlearnable.defenses.adversarial" for name in ("AdversarialTraining", "PGD")},
    **{
        name: "unlearnable.defenses.hooks"
        for name in ("StepHook", "l2_adversarial_training", "linf_adversarial_training")
    },
    "DeconvolutionAT": "unlearnable.defenses.dat",
    "UEraserMax": "unlearnable.defenses.ueraser",
    **{
        name: "unlearnable.defenses.deconv"
        for name in ("Deconvolve", "Deconvolver", "estimate_kernels", "recover", "replay", "wiener_deconvolve")
    },
    "OrthogonalProjection": "unlearnable.defenses.projection",
    "DVAE": "unlearnable.defenses.dvae",
    "Notch": "unlearnable.defenses.notch",
    "ColourUnshift": "unlearnable.defenses.colour",
    "DiffusionPurification": "unlearnable.defenses.diffusion",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
