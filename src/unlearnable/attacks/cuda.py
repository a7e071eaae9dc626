"""CUDA: Convolution-based Unlearnable DAtaset (Sadasivan et al., CVPR 2023), and its stripe relatives.

Every image of class c is blurred with a secret nonnegative k×k kernel s_c (the same kernel on every
channel), normalised by its own maximum and truncated to uint8. The kernels and the per-image
"poison or not" draws come from one legacy ``numpy.random.RandomState(seed)`` in the published order,
so seed 0 gives the published private key (SPEC §1).

VUDA / HUDA (named in the COIN paper; no public code): the same draws as CUDA, then every kernel entry
outside the column (VUDA) or row (HUDA) holding the 1.0 centre parameter is set to zero, giving a
vertical or horizontal stripe kernel. This is the project's choice of their unpublished parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnable.devices import default_device
from unlearnable.errors import UserInputError
from unlearnable.params import SEED, Constraint, Interval, validate_params

KernelShape = Literal["full", "vertical", "horizontal"]

# Images per chunk on the CPU: 128 32×32×3 float32 images (1.5 MB) stay close to the core through the
# k² shifted multiply-adds; larger chunks spill out of cache and run ~2× slower (bench/bench_cuda.py).
CPU_CHUNK_PIXELS = 128 * 3 * 32 * 32
GPU_CHUNK_PIXELS = 8192 * 3 * 32 * 32


@dataclass
class Poison:
    """The output of an attack.

    Attributes:
        images: uint8 N×C×H×W, the protected images (unpoisoned ones unchanged).
        key: JSON-serialisable private key: attack name, every parameter, seed, kernels, and
            ``poisoned_indices`` (sorted list of the indices that were changed).
    """

    images: torch.Tensor
    key: dict[str, Any] = field(default_factory=dict)


def cuda_key(
    num_classes: int,
    num_images: int,
    kernel_size: int = 3,
    blur_parameter: float = 0.3,
    seed: int = 0,
    mix: float = 1.0,
    kernel_shape: KernelShape = "full",
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the class kernels and the per-image poison mask from the published random stream.

    One ``RandomState(seed)``; per class: 3·k·k uniforms on [0, p_b) shaped (3,1,k,k), row r = randint(k),
    column q = randint(k), entry [0,0,r,q] = 1.0, and channel 0 is the kernel. Then one ``random()``
    per image, for every image, poisoned iff it is < mix.

    Returns:
        kernels: float32 (num_classes, k, k), entries in [0, p_b) plus the single 1.0.
        poisoned: bool (num_images,), the images to blur.
    """
    rng = np.random.RandomState(seed)
    kernels = np.empty((num_classes, kernel_size, kernel_size), dtype=np.float32)
    for c in range(num_classes):
        k = rng.uniform(0.0, blur_parameter, size=(3, 1, kernel_size, kernel_size))
        r = rng.randint(kernel_size)
        q = rng.randint(kernel_size)
        k[0, 0, r, q] = 1.0
        if kernel_shape == "vertical":
            k[0, 0, :, np.arange(kernel_size) != q] = 0.0
        elif kernel_shape == "horizontal":
            k[0, 0, np.arange(kernel_size) != r, :] = 0.0
        kernels[c] = k[0, 0]
    poisoned = rng.random_sample(num_images) < mix
    return kernels, poisoned


class BlurNormalise:
    """Blur each image with its own kernel, normalise each image by its max, truncate to uint8.

    The padded input and the float output live in buffers allocated once and reused for every chunk:
    fresh multi-megabyte allocations per chunk page-fault and cost more than the arithmetic.

    Args:
        chunk: the most images one call receives.
        shape: (C, H, W) of every image.
        kernel_size: odd k; zero padding k//2.
        grayscale: replace every channel of the blurred image by the channel mean.
        device: where the buffers and the arithmetic live.
        border: "zeros" (published) pads with zeros, which darkens the border by the taps that fall
            outside; "reflect" pads by reflection, which leaves no such trace.
    """

    def __init__(
        self,
        chunk: int,
        shape: tuple[int, ...],
        kernel_size: int,
        grayscale: bool = False,
        device: str | torch.device = "cpu",
        border: str = "zeros",
    ) -> None:
        c, h, w = shape
        self.pad = kernel_size // 2
        self.grayscale = grayscale
        self.border = border
        self.padded = torch.zeros(chunk, c, h + 2 * self.pad, w + 2 * self.pad, device=device)
        self.blurred = torch.empty(chunk, c, h, w, device=device)
        self.truncated = torch.empty(chunk, c, h, w, dtype=torch.int32, device=device)

    def __call__(self, x: torch.Tensor, kernels: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``floor(255 · y / max(y))`` per image into `out` (an all-zero image stays black).

        Args:
            x: uint8 or float B×C×H×W (B ≤ chunk).
            kernels: float32 B×k×k on the buffers' device, one kernel per image (conv2d semantics);
                kernels scaled by 1/255 make uint8 input match conv on ``x/255``.
            out: uint8 B×C×H×W, receives the result.
        """
        b, _, h, w = x.shape
        p, k = self.pad, kernels.shape[-1]
        xp = self.padded[:b]
        if self.border == "reflect":
            xp.copy_(torch.nn.functional.pad(x.float(), (p, p, p, p), mode="reflect"))
        else:
            xp[:, :, p : p + h, p : p + w] = x  # the border stays zero: only the interior is ever written
        taps = kernels.reshape(b, k * k, 1, 1, 1).unbind(1)
        # k² shifted multiply-adds with per-image weights, in dataset order: on CPU this beats grouped
        # or single-channel conv2d and per-class gathers several times over (bench/bench_cuda.py).
        y = torch.mul(xp[:, :, 0:h, 0:w], taps[0], out=self.blurred[:b])
        for i in range(k):
            for j in range(k):
                if i or j:
                    y.addcmul_(xp[:, :, i : i + h, j : j + w], taps[i * k + j])
        if self.grayscale:
            y.copy_(y.mean(dim=1, keepdim=True).expand_as(y))
        peak = y.amax(dim=(1, 2, 3), keepdim=True)
        peak.masked_fill_(peak == 0, 1.0)
        # float → int truncates toward zero, as the published astype(uint8) does; going through int32
        # is ~4× faster on CPU than a direct float → uint8 cast (bench/bench_cuda.py).
        out.copy_(torch.mul(y.div_(peak), 255.0, out=y).to(torch.int32))


def convolve_classwise(
    images: torch.Tensor,
    labels: torch.Tensor,
    kernels: np.ndarray,
    poisoned: np.ndarray,
    grayscale: bool = False,
    device: str | torch.device | None = None,
    out: torch.Tensor | None = None,
    progress: bool = True,
    border: str = "zeros",
    rows: range | None = None,
) -> torch.Tensor:
    """Blur every image selected by ``poisoned`` with the kernel of its class, in chunks.

    Args:
        images: uint8 N×C×H×W (may be a memory-mapped view); read in chunks, never copied whole.
        labels: int64 (N,).
        kernels: float (K, k, k), one per class.
        poisoned: bool (N,).
        device: where the arithmetic runs (default: CUDA when available, else CPU).
        out: optional uint8 N×C×H×W to write into (e.g. a memory-mapped output), not `images` itself.
        border: padding, "zeros" (published) or "reflect" (see `BlurNormalise`).
        rows: compute only these images of `out` (one process's share when the work is split); None = all.

    Returns:
        uint8 N×C×H×W: poisoned images blurred, the others unchanged.
    """
    device = default_device(device)
    rows = range(len(images)) if rows is None else rows
    if out is None:
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
    chunk = max(1, (GPU_CHUNK_PIXELS if device.type == "cuda" else CPU_CHUNK_PIXELS) // images[0].numel())
    blur = BlurNormalise(chunk, tuple(images.shape[1:]), kernels.shape[-1], grayscale, device, border)
    per_image = (torch.from_numpy(kernels).to(device) / 255)[labels.to(device)]
    keep = torch.from_numpy(~poisoned)
    starts = range(rows.start, rows.stop, chunk)
    for start in tqdm(starts, desc="poisoning", unit="chunk", disable=not progress or len(rows) < 20_000):
        stop = min(start + chunk, rows.stop)
        x = images[start:stop].to(device, non_blocking=True)
        result = out[start:stop] if device.type == "cpu" else torch.empty_like(x)
        blur(x, per_image[start:stop], result)
        if device.type != "cpu":
            out[start:stop] = result.cpu()
        # Every image was blurred (cheaper than gathering the selected ones); put the others back.
        untouched = keep[start:stop]
        if untouched.any():
            out[start:stop][untouched] = images[start:stop][untouched]
    return out


COMMON_CONSTRAINTS: dict[str, Constraint] = {"seed": SEED, "mix": Interval(float, 0, 1)}
"""What every attack takes: the key's seed (numpy's RandomState range) and the poisoned fraction."""
CUDA_CONSTRAINTS: dict[str, Constraint] = {**COMMON_CONSTRAINTS, "blur_parameter": Interval(float, 0, 1)}
"""p_b in [0, 1] (paper: 0.3 for CIFAR, 0.06 for ImageNet-100)."""


def check_cuda_params(
    kernel_size: int, blur_parameter: float, seed: int, mix: float, image_hw: tuple[int, ...]
) -> None:
    """Raise UserInputError for out-of-range CUDA parameters."""
    if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size > min(image_hw):
        raise UserInputError(
            f"--kernel-size {kernel_size} is invalid; use an odd size from 1 to {min(image_hw)} (paper: 3 for 32×32, 9 for 224×224)"
        )
    validate_params("cuda", {"blur_parameter": blur_parameter, "seed": seed, "mix": mix}, CUDA_CONSTRAINTS)


def cuda_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    kernel_size: int = 3,
    blur_parameter: float = 0.3,
    seed: int = 0,
    mix: float = 1.0,
    grayscale: bool = False,
    kernel_shape: KernelShape = "full",
    device: str | torch.device | None = None,
    out: torch.Tensor | None = None,
    progress: bool = True,
    name: str = "cuda",
    border: str = "zeros",
    rows: range | None = None,
) -> Poison:
    """Protect a training set with class-wise convolutions (CUDA; VUDA/HUDA via ``kernel_shape``).

    Args:
        images: uint8 N×C×H×W, values 0..255 (C = 1 or 3).
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K, the number of kernels drawn (CIFAR-100 continues the stream to 100).
        kernel_size: odd k (zero padding k//2).
        blur_parameter: p_b, kernel entries other than the centre parameter are U[0, p_b).
        seed: RandomState seed; 0 reproduces the published key.
        mix: fraction of images poisoned (each image independently, published draw order).
        grayscale: grayscale CUDA (channel mean after the blur).
        border: "zeros" (published: zero padding k//2) or "reflect" (``cuda-reflect``: reflection
            padding leaves no darkened border, the trace the ``deconv`` defense estimates kernels from).
        out: optional uint8 N×C×H×W to write into (e.g. a view of a memory-mapped file).
        rows: compute only these images of `out` (the key is still drawn for all of them), so that
            processes can split a large dataset (`unlearnable.app.poison.poison_to_directory`).

    Returns:
        Poison with the protected images and the key.
    """
    check_cuda_params(kernel_size, blur_parameter, seed, mix, tuple(images.shape[2:]))
    kernels, poisoned = cuda_key(num_classes, len(images), kernel_size, blur_parameter, seed, mix, kernel_shape)
    protected = convolve_classwise(images, labels, kernels, poisoned, grayscale, device, out, progress, border, rows)
    key = {
        "attack": name,
        "params": {
            "kernel_size": kernel_size,
            "blur_parameter": blur_parameter,
            "mix": mix,
            "grayscale": grayscale,
            "kernel_shape": kernel_shape,
            "padding": kernel_size // 2,
            "border": border,
        },
        "seed": seed,
        "kernels": kernels.tolist(),
        "poisoned_indices": np.flatnonzero(poisoned).tolist(),
    }
    return Poison(protected, key)


vuda_poison = partial(cuda_poison, kernel_shape="vertical", name="vuda")
"""VUDA: CUDA with vertical (k×1) kernels."""
huda_poison = partial(cuda_poison, kernel_shape="horizontal", name="huda")
"""HUDA: CUDA with horizontal (1×k) kernels."""
cuda_reflect_poison = partial(cuda_poison, border="reflect", name="cuda-reflect")
"""CUDA with reflection padding: no darkened border."""
