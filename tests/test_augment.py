"""The batched augmentations (training/augment.py) against torchvision, and the normalisation statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from unlearnable.data import ImageDataset
from unlearnable.training.augment import (
    CIFAR10_CLASSES,
    normalization_stats,
    random_crop,
    random_flip,
    random_resized_crop,
    random_rotation,
    resized_crop_boxes,
    resolve_augment,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_crop_reframes_30_into_32_with_zero_border() -> None:
    """Each output is F.pad(x, 4)[t:t+32, l:l+32] for offsets t, l in 0..6, and all offsets occur."""
    batch = 300
    x = (torch.arange(30 * 30, dtype=torch.float32) + 1).view(1, 1, 30, 30).repeat(batch, 2, 1, 1)
    out = random_crop(x, (32, 32), 4, torch.Generator().manual_seed(0))
    assert out.shape == (batch, 2, 32, 32)
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = set()
    for b in range(batch):
        r, c = (out[b, 0] > 0).nonzero()[0].tolist()  # a visible pixel tells where the window sits
        value = int(out[b, 0, r, c]) - 1
        top, left = value // 30 + 4 - r, value % 30 + 4 - c
        assert 0 <= top <= 6 and 0 <= left <= 6
        assert torch.equal(out[b], padded[b, :, top : top + 32, left : left + 32])
        offsets.add((top, left))
    assert len(offsets) == 49


def test_random_crop_offsets_on_32() -> None:
    x = torch.ones(400, 1, 32, 32)
    out = random_crop(x, (32, 32), 4, torch.Generator().manual_seed(1))
    visible_rows = (out[:, 0].sum(2) > 0).sum(1)
    assert set(visible_rows.tolist()) == {28, 29, 30, 31, 32}  # offsets 0..8: up to 4 zero rows either side
    assert out.sum() < x.sum()


def test_random_flip() -> None:
    x = torch.rand(200, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 70 < int(mirrored.sum()) < 130


@pytest.mark.parametrize("size", [(32, 32), (28, 36)])
def test_random_rotation_matches_torchvision(size: tuple[int, int]) -> None:
    """The same angles through torchvision's rotate (nearest, fill 0) give the same images."""
    x = torch.rand(32, 3, *size, generator=torch.Generator().manual_seed(1))
    out = random_rotation(x, 15, torch.Generator().manual_seed(0))
    angles = (torch.rand(32, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 15
    reference = torch.stack(
        [TF.rotate(image, float(angle), InterpolationMode.NEAREST, fill=0) for image, angle in zip(x, angles)]
    )
    assert (out == reference).float().mean() > 0.999
    assert not torch.equal(out, x)


@pytest.mark.parametrize("size", [(48, 48), (40, 56)])
def test_random_resized_crop_matches_torchvision(size: tuple[int, int]) -> None:
    """Each image equals torchvision's resized_crop (bilinear, no antialias) of the same box."""
    x = torch.rand(16, 3, *size, generator=torch.Generator().manual_seed(1))
    out = random_resized_crop(x, (32, 32), torch.Generator().manual_seed(0))
    boxes = resized_crop_boxes(16, *size, torch.Generator().manual_seed(0))
    reference = torch.stack(
        [
            TF.resized_crop(image, *box.tolist(), [32, 32], InterpolationMode.BILINEAR, antialias=False)
            for image, box in zip(x, boxes)
        ]
    )
    assert out.shape == (16, 3, 32, 32)
    torch.testing.assert_close(out, reference, rtol=0, atol=2e-5)


def test_resized_crop_boxes_follow_torchvision_rules() -> None:
    """Boxes lie inside the image with area 8–100% and ratio 3/4–4/3; when no draw fits, the centre box."""
    top, left, h, w = resized_crop_boxes(20_000, 224, 224, torch.Generator().manual_seed(0)).unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 224).all() and (left + w <= 224).all())
    area = (h * w).double() / 224**2
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    reference = (
        torch.tensor(
            [
                (lambda b: b[2] * b[3])(
                    RandomResizedCrop.get_params(torch.empty(1, 224, 224), [0.08, 1.0], [3 / 4, 4 / 3])
                )
                for _ in range(5000)
            ],
            dtype=torch.float64,
        )
        / 224**2
    )
    assert 0.075 < area.min() and area.max() <= 1
    assert abs(area.mean() - reference.mean()) < 0.015 and abs(area.std() - reference.std()) < 0.015
    ratio = w.double() / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    for start, extent in ((top, h), (left, w)):  # offsets uniform over the positions that fit
        assert abs(((start + 0.5) / (225 - extent)).mean() - 0.5) < 0.01
    # A 4×200 strip: no candidate fits (h ≥ 4·0.75·... rounds above 4 for most) → central box of ratio 4/3.
    boxes = resized_crop_boxes(200, 4, 200, torch.Generator().manual_seed(0))
    assert ((boxes == torch.tensor([0, 97, 4, 5])).all(1) | (boxes[:, 2] <= 4)).all()
    assert (boxes[:, 3] <= 200).all()


def test_augment_choice() -> None:
    assert resolve_augment("auto", (32, 32)) == "crop" and resolve_augment("auto", (224, 224)) == "resized-crop"
    assert resolve_augment("auto", (64, 80)) == "resized-crop" and resolve_augment("crop", (224, 224)) == "crop"


def test_normalization_stats(blob_data) -> None:
    train_set, _ = blob_data
    cifar_like = ImageDataset(train_set.images, train_set.labels % 10, list(CIFAR10_CLASSES))
    assert normalization_stats("auto", cifar_like) == ("cifar10", [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
    large = ImageDataset(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"])
    assert normalization_stats("auto", large) == ("imagenet", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    name, mean, std = normalization_stats("auto", train_set)
    pixels = train_set.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert name == "data"
    assert mean == pytest.approx(pixels.mean(1).tolist())
    assert std == pytest.approx(pixels.std(1, unbiased=False).tolist())
