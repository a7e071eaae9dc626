"""The on-device augmentation of training batches, and the input normalisation.

Every function takes a whole B×C×H×W batch and draws from the run's torch.Generator, so a batch is
augmented with a few tensor ops on the training device (SPEC §4): RandomCrop with zero padding
(`random_crop`), RandomResizedCrop (`random_resized_crop`), the horizontal flip (`random_flip`)
and RandomRotation (`random_rotation`), each matching torchvision's transform of that name.
`normalization_stats` chooses the per-channel standardisation constants and `Normalize` applies them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unlearnable.data import ImageDataset

CROP_PADDING = 4
ROTATION_DEGREES = 15.0

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NORMALIZATION_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # The constants of the published code (the CIFAR-10 std is the well-known slightly-off one).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # torchvision's ImageNet constants, used by every ImageNet-100 code base.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NORMALIZATIONS = ("auto", "cifar10", "cifar100", "imagenet", "data")
IMAGENET_MIN_SIZE = 64
""""auto" takes the ImageNet constants for colour images at least this large (photos at ImageNet scale)."""
AUGMENTATIONS = ("auto", "crop", "resized-crop")
STATS_CHUNK_PIXELS = 1 << 24


def random_crop(x: torch.Tensor, size: tuple[int, int], padding: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, fill 0) for every image of a batch at once.

    Zero-pads the B×C×H×W batch by `padding` on every side and takes one size[0]×size[1] window
    per image at a random offset, uniform over all windows that fit (0..H+2·padding−size[0] rows,
    likewise columns). A 30×30 image gets a 32×32 window: its content re-framed with a zero border.

    Returns:
        B×C×size[0]×size[1], dtype and device of `x`.
    """
    batch, channels, height, width = x.shape
    rows, cols = size
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    if padded_h < rows or padded_w < cols:
        raise ValueError(f"cannot crop {rows}×{cols} from {height}×{width} padded by {padding}")
    top = torch.randint(padded_h - rows + 1, (batch,), generator=generator, device=x.device)
    left = torch.randint(padded_w - cols + 1, (batch,), generator=generator, device=x.device)
    # Flat index of every window pixel in the padded image: one gather for the whole batch.
    row_index = top[:, None] + torch.arange(rows, device=x.device)
    col_index = left[:, None] + torch.arange(cols, device=x.device)
    index = (row_index[:, :, None] * padded_w + col_index[:, None, :]).view(batch, 1, rows * cols)
    padded = F.pad(x, (padding,) * 4).view(batch, channels, padded_h * padded_w)
    return padded.gather(2, index.expand(batch, channels, -1)).view(batch, channels, rows, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of the B×C×H×W batch left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
RESIZED_CROP_ATTEMPTS = 10


def resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = RESIZED_CROP_SCALE,
    ratio: tuple[float, float] = RESIZED_CROP_RATIO,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for `batch` images at once.

    Per image, up to 10 candidate boxes: area ~ U(scale)·H·W, aspect ratio log-uniform in `ratio`,
    w = round(√(area·ratio)), h = round(√(area/ratio)); the first that fits is taken at a uniform
    offset, and when none fits the central box of the whole image with the ratio clamped to `ratio`.

    Returns:
        int64 B×4 (top, left, h, w) on the generator's device.
    """
    device = generator.device
    area = height * width
    draws = (batch, RESIZED_CROP_ATTEMPTS)
    target = torch.empty(draws, device=device).uniform_(*scale, generator=generator) * area
    log_ratio = torch.empty(draws, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    w = (target * aspect).sqrt().round().long()
    h = (target / aspect).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first candidate that fits (0 when none does)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    if width / height < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    found = fits.any(1)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)
    u = torch.rand(batch, 2, device=device, generator=generator)
    top = torch.where(found, (u[:, 0] * (height - h + 1)).long(), (height - fallback_h) // 2)
    left = torch.where(found, (u[:, 1] * (width - w + 1)).long(), (width - fallback_w) // 2)
    return torch.stack([top, left, h, w], 1)


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear) per image of a batch.

    Boxes from `resized_crop_boxes`; each is resampled to `size` bilinearly as torchvision resizes the
    cropped image (``interpolate(..., align_corners=False)``: half-pixel centres, sample positions
    clamped to the box, so no pixel outside it leaks in), in one ``grid_sample`` for the batch. No
    antialiasing: on a store at the training size every box is at most the image, so it is only
    ever enlarged (or kept), and antialiasing would not change it.

    Args:
        x: float B×C×H×W.
        size: (rows, cols) of the output.

    Returns:
        float B×C×size[0]×size[1].
    """
    batch, _, height, width = x.shape
    top, left, h, w = resized_crop_boxes(batch, height, width, generator).to(x.dtype).unbind(1)

    def sample_positions(start: torch.Tensor, extent: torch.Tensor, count: int, full: int) -> torch.Tensor:
        # Output pixel v reads input position start + clamp((v + 0.5)·extent/count − 0.5, 0, extent − 1),
        # which grid_sample (align_corners=False) takes as 2·(position + 0.5)/full − 1.
        v = torch.arange(count, device=x.device, dtype=x.dtype) + 0.5
        inside = (v * (extent / count)[:, None] - 0.5).clamp(min=0).minimum(extent[:, None] - 1)
        return (start[:, None] + inside + 0.5) * (2 / full) - 1

    rows = sample_positions(top, h, size[0], height)  # B×rows
    cols = sample_positions(left, w, size[1], width)  # B×cols
    grid = torch.stack([cols[:, None, :].expand(-1, size[0], -1), rows[:, :, None].expand(-1, -1, size[1])], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_rotation(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomRotation(degrees, nearest, fill 0) per image: angle ~ U(−degrees, degrees).

    Rotates each B×C×H×W image about its centre with ``affine_grid`` + ``grid_sample``
    (nearest neighbour, zero outside); the sampling grid is corrected for H ≠ W.
    """
    batch, _, height, width = x.shape
    angle = torch.rand(batch, generator=generator, device=x.device).mul_(2).sub_(1).mul_(math.radians(degrees))
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin * height / width, zero], 1), torch.stack([sin * width / height, cos, zero], 1)], 1
    )  # B×2×3
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def normalization_stats(choice: str, train_set: ImageDataset) -> tuple[str, list[float], list[float]]:
    """(name, mean, std) of the per-channel standardisation for `train_set`.

    `choice` "cifar10" / "cifar100" / "imagenet" gives the published constants, "data" the mean
    and std of every pixel of the training images per channel (in [0, 1] units, read in chunks),
    and "auto" the CIFAR constants when the training set is 3×32×32 with CIFAR-10's classes or
    CIFAR-100's 100 fine classes, the ImageNet constants for colour images of at least 64×64,
    otherwise "data".
    """
    if choice == "auto":
        choice = "data"
        channels, height, width = train_set.shape
        if train_set.shape == (3, 32, 32):
            classes = tuple(train_set.classes)
            if classes == CIFAR10_CLASSES:
                choice = "cifar10"
            elif len(classes) == 100 and classes[0] == "apple" and classes[-1] == "worm":
                choice = "cifar100"
        elif channels == 3 and min(height, width) >= IMAGENET_MIN_SIZE:
            choice = "imagenet"
    if choice in NORMALIZATION_STATS:
        published_mean, published_std = NORMALIZATION_STATS[choice]
        return choice, list(published_mean), list(published_std)
    channels = train_set.shape[0]
    total, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    step = max(1, STATS_CHUNK_PIXELS // train_set.images[0].numel())
    for start in range(0, len(train_set), step):
        chunk = train_set.images[start : start + step].to(torch.float64).transpose(0, 1).reshape(channels, -1) / 255
        total += chunk.sum(1)
        squares += chunk.square().sum(1)
        count += chunk.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return "data", mean.tolist(), std.tolist()


class Normalize:
    """x ↦ (x − mean) / std per channel, or the identity when `mean` is None."""

    def __init__(self, mean: list[float] | None, std: list[float] | None, device: torch.device) -> None:
        self.mean = None if mean is None else torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            return x
        return (x - self.mean) / self.std


def resolve_augment(choice: str, image_size: tuple[int, int]) -> str:
    """ "crop" or "resized-crop" for `choice` ("auto": resized-crop for images of at least 64×64)."""
    if choice != "auto":
        return choice
    return "resized-crop" if min(image_size) >= IMAGENET_MIN_SIZE else "crop"
