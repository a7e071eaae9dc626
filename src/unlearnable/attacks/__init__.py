"""Attacks (poisons) by name.

An attack is a function ``(images, labels, num_classes, **params) -> Poison``: uint8 N×C×H×W in,
protected uint8 images plus a JSON-serialisable private key out; pure, vectorised and deterministic.
Adding one is a module plus one ``ATTACKS.add`` line here (see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnable.registry import Registry, lazy_exports

ATTACKS = Registry("attack")
ATTACKS.add(
    "cuda",
    "unlearnable.attacks.cuda:cuda_poison",
    "class-wise random k×k blur; k 3 and seed 0 give the published key (Sadasivan et al., CVPR 2023)",
)
ATTACKS.add("vuda", "unlearnable.attacks.cuda:vuda_poison", "CUDA with vertical k×1 kernels")
ATTACKS.add("huda", "unlearnable.attacks.cuda:huda_poison", "CUDA with horizontal 1×k kernels")
ATTACKS.add(
    "cuda-reflect", "unlearnable.attacks.cuda:cuda_reflect_poison", "CUDA with reflection padding: no darkened border"
)
ATTACKS.add("ops", "unlearnable.attacks.ops:ops_poison", "one class-wise pixel (Wu et al., ICLR 2023)")
ATTACKS.add("lsp", "unlearnable.attacks.lsp:lsp_poison", "linearly separable colour patches (Yu et al., KDD 2022)")
ATTACKS.add(
    "ar", "unlearnable.attacks.ar:ar_poison", "class-wise autoregressive noise (Sandoval-Segura et al., NeurIPS 2022)"
)
ATTACKS.add("noise", "unlearnable.attacks.additive:noise_poison", "class-wise uniform L∞ noise, 8/255")
ATTACKS.add(
    "dune",
    "unlearnable.attacks.dune:dune_poison",
    "ensemble targeted PGD plus a class-wise colour shift, surrogate trained in the call (Wang et al., ICML 2026)",
)
ATTACKS.add(
    "grating",
    "unlearnable.attacks.grating:grating_poison",
    "class-wise low-frequency luminance grating, random phase per image (this project)",
)

_EXPORTS = {
    "Poison": "unlearnable.attacks.cuda",
    "cuda_key": "unlearnable.attacks.cuda",
    "cuda_poison": "unlearnable.attacks.cuda",
    "ops_poison": "unlearnable.attacks.ops",
    "lsp_poison": "unlearnable.attacks.lsp",
    "ar_poison": "unlearnable.attacks.ar",
    "noise_poison": "unlearnable.attacks.additive",
    "dune_poison": "unlearnable.attacks.dune",
    "grating_poison": "unlearnable.attacks.grating",
    "poison_dataset": "unlearnable.attacks.apply",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from unlearnable.attacks.additive import noise_poison
    from unlearnable.attacks.apply import poison_dataset
    from unlearnable.attacks.ar import ar_poison
    from unlearnable.attacks.cuda import Poison, cuda_key, cuda_poison
    from unlearnable.attacks.dune import dune_poison
    from unlearnable.attacks.grating import grating_poison
    from unlearnable.attacks.lsp import lsp_poison
    from unlearnable.attacks.ops import ops_poison

__all__ = [
    "ATTACKS",
    "Poison",
    "ar_poison",
    "cuda_key",
    "cuda_poison",
    "dune_poison",
    "grating_poison",
    "lsp_poison",
    "noise_poison",
    "ops_poison",
    "poison_dataset",
]
