"""CUDA / VUDA / HUDA: the published key, the published poison mask, and the images themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearnable.attacks import ATTACKS, cuda_key, cuda_poison
from unlearnable.errors import UserInputError

# SPEC.md §1: seed 0, p_b 0.3, k 3, K 10; (r, q) = position of the 1.0, then the kernel row-major.
TEST_VECTORS = [
    ((0, 2), [0.1646, 0.2146, 1.0000, 0.1635, 0.1271, 0.1938, 0.1313, 0.2675, 0.2891]),
    ((0, 0), [1.0000, 0.0794, 0.2323, 0.1368, 0.1705, 0.0056, 0.1853, 0.1836, 0.1851]),
    ((0, 1), [0.0760, 1.0000, 0.0733, 0.0477, 0.0331, 0.1969, 0.0415, 0.0590, 0.1106]),
    ((0, 2), [0.1527, 0.2750, 1.0000, 0.0249, 0.0833, 0.0028, 0.2527, 0.1942, 0.2524]),
    ((2, 0), [0.2441, 0.1190, 0.2643, 0.1744, 0.2645, 0.2078, 1.0000, 0.1504, 0.2868]),
    ((0, 2), [0.1308, 0.2676, 1.0000, 0.2112, 0.0301, 0.2758, 0.2143, 0.2997, 0.0448]),
    ((2, 2), [0.1563, 0.0163, 0.0600, 0.0056, 0.2381, 0.0672, 0.1036, 0.2784, 1.0000]),
    ((0, 0), [1.0000, 0.2643, 0.2929, 0.1853, 0.1627, 0.2564, 0.2232, 0.1436, 0.2031]),
    ((1, 0), [0.2842, 0.2193, 0.0762, 1.0000, 0.1555, 0.0077, 0.0622, 0.1274, 0.1123]),
    ((1, 1), [0.1657, 0.1753, 0.2886, 0.0876, 1.0000, 0.0301, 0.0049, 0.2789, 0.2010]),
]


def test_kernels_reproduce_published_key():
    kernels, _ = cuda_key(10, 0, kernel_size=3, blur_parameter=0.3, seed=0)
    assert kernels.shape == (10, 3, 3) and kernels.dtype == np.float32
    for c, ((r, q), row_major) in enumerate(TEST_VECTORS):
        np.testing.assert_allclose(kernels[c].ravel(), row_major, atol=5e-5)
        assert kernels[c, r, q] == 1.0
        assert np.count_nonzero(kernels[c] == 1.0) == 1


def test_cifar100_continues_the_same_stream():
    k10, _ = cuda_key(10, 0)
    k100, _ = cuda_key(100, 0)
    np.testing.assert_array_equal(k100[:10], k10)
    assert len(np.unique(k100.reshape(100, -1), axis=0)) == 100


def published_mask(num_classes: int, n: int, mix: float, seed: int = 0, k: int = 3) -> np.ndarray:
    """The published draw order, one call at a time: all kernels, then one random() per image."""
    rng = np.random.RandomState(seed)
    for _ in range(num_classes):
        rng.uniform(0, 0.3, size=(3, 1, k, k))
        rng.randint(k)
        rng.randint(k)
    return np.array([rng.random() < mix for _ in range(n)])


@pytest.mark.parametrize("mix", [1.0, 0.5, 0.2])
def test_partial_poisoning_selects_the_published_images(mix):
    _, poisoned = cuda_key(10, 1000, mix=mix)
    np.testing.assert_array_equal(poisoned, published_mask(10, 1000, mix))
    if mix < 1:
        assert 0 < poisoned.sum() < 1000


def per_image_cuda(
    images: torch.Tensor, labels: torch.Tensor, kernels: np.ndarray, poisoned: np.ndarray, grayscale: bool = False
) -> torch.Tensor:
    """Straightforward reference: one conv2d per image on x/255, as the published generator does."""
    out = images.clone()
    k = kernels.shape[-1]
    c = images.shape[1]
    for i in np.flatnonzero(poisoned):
        x = images[i : i + 1].float() / 255
        w = torch.from_numpy(kernels[labels[i]]).expand(c, 1, k, k)
        y = F.conv2d(x, w, padding=k // 2, groups=c)
        if grayscale:
            y = y.mean(dim=1, keepdim=True).expand_as(y)
        y = y / y.max()
        out[i] = (y * 255).to(torch.uint8)[0]
    return out


def random_set(n: int, c: int = 3, size: int = 32, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    # Smooth half of the images so that the blurred values are not all near the same level.
    images[: n // 2] = F.avg_pool2d(images[: n // 2].float(), 3, 1, 1).to(torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return images, labels


def assert_matches_reference(ours: torch.Tensor, ref: torch.Tensor) -> None:
    diff = (ours.int() - ref.int()).abs()
    assert diff.max().item() <= 1, "batched CUDA differs from the per-image reference by more than 1/255"
    assert (diff == 0).float().mean().item() > 0.999


@pytest.mark.parametrize(
    "kernel_size,mix,grayscale,channels",
    [
        (3, 1.0, False, 3),
        (3, 0.5, False, 3),
        (3, 1.0, True, 3),
        (5, 1.0, False, 3),
        (3, 1.0, False, 1),
    ],
)
def test_batched_cuda_equals_per_image_reference(kernel_size, mix, grayscale, channels):
    images, labels = random_set(600, channels)
    p = cuda_poison(images, labels, 10, kernel_size=kernel_size, mix=mix, grayscale=grayscale, device="cpu")
    kernels, poisoned = cuda_key(10, 600, kernel_size, 0.3, 0, mix)
    assert p.key["poisoned_indices"] == np.flatnonzero(poisoned).tolist()
    assert p.images.dtype == torch.uint8 and p.images.shape == images.shape
    assert_matches_reference(p.images, per_image_cuda(images, labels, kernels, poisoned, grayscale))
    untouched = torch.from_numpy(~poisoned)
    assert torch.equal(p.images[untouched], images[untouched])
    # Every poisoned image is normalised by its own maximum: its brightest value is 255.
    assert (p.images[torch.from_numpy(poisoned)].flatten(1).amax(1) == 255).all()


def test_grayscale_channels_are_equal():
    images, labels = random_set(50)
    p = cuda_poison(images, labels, 10, grayscale=True, device="cpu")
    assert torch.equal(p.images[:, 0], p.images[:, 1]) and torch.equal(p.images[:, 1], p.images[:, 2])


def test_black_image_stays_black():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    p = cuda_poison(images, torch.arange(4), 4, device="cpu")
    assert torch.equal(p.images, images)


def test_same_seed_same_bytes_other_seed_other_key():
    images, labels = random_set(200)
    a = cuda_poison(images, labels, 10, seed=3, device="cpu")
    b = cuda_poison(images, labels, 10, seed=3, device="cpu")
    c = cuda_poison(images, labels, 10, seed=4, device="cpu")
    assert torch.equal(a.images, b.images) and a.key == b.key
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("name,axis", [("vuda", 1), ("huda", 0)])
def test_stripe_kernels(name, axis):
    images, labels = random_set(100)
    p = ATTACKS.get(name)(images, labels, 10, device="cpu")
    assert p.key["attack"] == name
    kernels = np.array(p.key["kernels"])
    full, _ = cuda_key(10, 0)
    for k, f in zip(kernels, full):
        r, q = np.argwhere(k == 1.0)[0]
        # Nonzero entries form the one column (VUDA) or row (HUDA) through the centre parameter,
        # with the values CUDA's stream gave them.
        stripe = (slice(None), q) if axis == 1 else (r, slice(None))
        np.testing.assert_array_equal(k[stripe], f[stripe])
        rest = k.copy()
        rest[stripe] = 0
        assert not rest.any()
    assert_matches_reference(p.images, per_image_cuda(images, labels, kernels.astype(np.float32), np.ones(100, bool)))


@pytest.mark.parametrize(
    "params",
    [
        {"kernel_size": 4},
        {"kernel_size": 0},
        {"kernel_size": 41},
        {"blur_parameter": -0.1},
        {"blur_parameter": 1.5},
        {"mix": 1.2},
        {"mix": -0.1},
        {"seed": -1},
    ],
)
def test_out_of_range_parameters_are_refused(params):
    images, labels = random_set(4)
    with pytest.raises(UserInputError):
        cuda_poison(images, labels, 10, **params)


def test_unknown_attack_lists_known_names():
    with pytest.raises(UserInputError, match="cuda"):
        ATTACKS.get("nope")
    assert {"cuda", "vuda", "huda"} <= set(ATTACKS)


@pytest.mark.cuda
def test_gpu_path_matches_cpu():
    images, labels = random_set(300)
    cpu = cuda_poison(images, labels, 10, device="cpu")
    gpu = cuda_poison(images, labels, 10, device="cuda")
    assert_matches_reference(gpu.images, cpu.images)
