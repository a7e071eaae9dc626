"""Defenses (RSK, SSK, FF) against independent references: scipy's DCT and direct correlation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch
import torch.nn.functional as F

from unlearnable.defenses import (DEFENSES, Compose, FrequencyFilter, Identity, RandomSharpen,
                                  StaticSharpen, build_defense, dct_matrix, kept_frequencies,
                                  sample_sharpen_kernels, static_sharpen_kernel)
from unlearnable.errors import UserInputError


def _images(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _scipy_low_pass(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Reference FF on B×C×H×W float64: dctn, zero outside the top-left block, idctn, clip."""
    coeffs = scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")
    mask = np.zeros(x.shape[-2:])
    mask[:rows, :cols] = 1
    return np.clip(scipy.fft.idctn(coeffs * mask, axes=(-2, -1), norm="ortho"), 0, 1)


def _scipy_sharpen(x: np.ndarray, kernels: np.ndarray, pad_mode: str | None = None) -> np.ndarray:
    """Reference sharpening: per image and channel, numpy pad then scipy valid correlation, clip."""
    out = []
    for image, kernel in zip(x, kernels):
        channels = [np.pad(ch, 1, mode=pad_mode) if pad_mode else ch for ch in image]
        out.append([scipy.signal.correlate2d(ch, kernel, mode="valid") for ch in channels])
    return np.clip(np.array(out), 0, 1)


# --- FF ---------------------------------------------------------------------------------------

def test_dct_matrix_is_orthonormal_and_matches_scipy():
    d = dct_matrix(7)
    torch.testing.assert_close(d @ d.T, torch.eye(7, dtype=torch.float64))
    np.testing.assert_allclose(d.numpy(), scipy.fft.dct(np.eye(7), axis=0, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("size", [(32, 32), (30, 30), (28, 28), (32, 24), (17, 30)])
def test_ff_matches_scipy_dct(size):
    x = _images((3, 3, *size))
    out = FrequencyFilter()(x)
    rows, cols = int(size[0] * 30 / 100), int(size[1] * 30 / 100)
    assert out.shape == x.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _scipy_low_pass(x.double().numpy(), rows, cols), atol=1e-5)


def test_ff_float64_is_exact():
    x = _images((2, 3, 30, 30), dtype=torch.float64)
    np.testing.assert_allclose(FrequencyFilter(keep_percent=50)(x).numpy(),
                               _scipy_low_pass(x.numpy(), 15, 15), atol=1e-12)


def test_ff_keep_all_is_identity():
    x = _images((2, 3, 32, 32))
    torch.testing.assert_close(FrequencyFilter(keep_percent=100)(x), x, atol=1e-5, rtol=0)


def test_ff_kept_frequencies_and_imagenet_variant():
    assert kept_frequencies(32, 30) == 9 and kept_frequencies(30, 30) == 9 and kept_frequencies(28, 30) == 8
    assert kept_frequencies(224, 30, imagenet_variant=True) == 26  # int(0.4 · 224 · 0.3) = int(26.88)
    assert kept_frequencies(32, 30, imagenet_variant=True) == 3
    x = _images((2, 3, 32, 32))
    out = FrequencyFilter(imagenet_variant=True)(x)
    np.testing.assert_allclose(out.numpy(), _scipy_low_pass(x.double().numpy(), 3, 3), atol=1e-5)


# --- SSK --------------------------------------------------------------------------------------

def test_ssk_kernel_sums_to_one():
    kernel = static_sharpen_kernel(3.0)
    assert kernel.sum().item() == pytest.approx(1.0)
    assert kernel[1, 1].item() == 3.0 and kernel[0, 1].item() == -0.5
    assert kernel[0, 0].item() == kernel[2, 2].item() == 0


def test_ssk_matches_direct_correlation():
    x = _images((3, 3, 12, 10))
    out = StaticSharpen()(x)
    assert out.shape == (3, 3, 10, 8)
    kernels = np.broadcast_to(static_sharpen_kernel(dtype=torch.float64).numpy(), (3, 3, 3))
    np.testing.assert_allclose(out.numpy(), _scipy_sharpen(x.double().numpy(), kernels), atol=1e-5)


def test_ssk_keeps_constant_image_constant():
    x = torch.full((2, 3, 8, 8), 0.3)
    torch.testing.assert_close(StaticSharpen()(x), torch.full((2, 3, 6, 6), 0.3))
    same = StaticSharpen(padding="replicate")(x)  # replicate keeps the border constant too
    torch.testing.assert_close(same, x)


@pytest.mark.parametrize("padding, pad_mode", [("replicate", "edge"), ("reflect", "reflect"), ("zeros", "constant")])
def test_sharpen_same_padding_matches_numpy_pad(padding, pad_mode):
    x = _images((2, 3, 9, 11))
    out = StaticSharpen(center=3.0, padding=padding)(x)
    kernels = np.broadcast_to(static_sharpen_kernel(3.0, dtype=torch.float64).numpy(), (2, 3, 3))
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), _scipy_sharpen(x.double().numpy(), kernels, pad_mode), atol=1e-5)


# --- RSK --------------------------------------------------------------------------------------

def test_rsk_kernel_statistics():
    kernels = sample_sharpen_kernels(20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = kernels[:, 1, 1]
    neighbours = -torch.stack([kernels[:, 0, 1], kernels[:, 1, 0], kernels[:, 1, 2], kernels[:, 2, 1]], dim=1)
    assert c.mean().item() == pytest.approx(2.5, abs=0.005)
    assert c.std().item() == pytest.approx(0.1, abs=0.005)
    assert (kernels[:, [0, 0, 2, 2], [0, 2, 0, 2]] == 0).all()
    for n in neighbours.T:  # n = (c - 1) / 4 + noise: slope 0.25, intercept -0.25, residual std 0.1
        slope, intercept = np.polyfit(c.numpy(), n.numpy(), 1)
        assert slope == pytest.approx(0.25, abs=0.03) and intercept == pytest.approx(-0.25, abs=0.08)
        assert (n - (c - 1) / 4).std().item() == pytest.approx(0.1, abs=0.005)


def test_rsk_kernels_fresh_per_sample_and_per_call_and_seeded():
    g = torch.Generator().manual_seed(0)
    first, second = sample_sharpen_kernels(8, generator=g), sample_sharpen_kernels(8, generator=g)
    assert len(set(first[:, 1, 1].tolist())) == 8
    assert not torch.equal(first, second)
    torch.testing.assert_close(sample_sharpen_kernels(8, generator=torch.Generator().manual_seed(0)), first)

    x = _images((4, 3, 32, 32))
    rsk = RandomSharpen()
    out_a = rsk(x, torch.Generator().manual_seed(5))
    assert torch.equal(out_a, rsk(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out_a, rsk(x, torch.Generator().manual_seed(6)))


def test_rsk_equals_per_image_conv2d_with_its_kernel():
    x = _images((5, 3, 32, 32))
    out = RandomSharpen()(x, torch.Generator().manual_seed(3))
    kernels = sample_sharpen_kernels(5, generator=torch.Generator().manual_seed(3))
    assert out.shape == (5, 3, 30, 30)
    assert out.min().item() >= 0 and out.max().item() <= 1
    for image, kernel, result in zip(x, kernels, out):
        expected = F.conv2d(image.unsqueeze(1), kernel.view(1, 1, 3, 3)).squeeze(1).clamp(0, 1)
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


def test_rsk_same_padding_keeps_size():
    out = RandomSharpen(padding="replicate")(_images((2, 3, 32, 32)), torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min().item() and out.max().item() <= 1


def test_rsk_without_a_generator_draws_from_torchs_global_one():
    x = _images((2, 3, 8, 8))
    torch.manual_seed(5)
    first = RandomSharpen()(x)
    assert torch.equal(first, RandomSharpen()(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, RandomSharpen()(x))  # the global generator moved on


def test_generator_must_be_a_generator():
    with pytest.raises(UserInputError, match="^RandomSharpen: generator must be a torch.Generator or None"):
        RandomSharpen()(_images((1, 3, 8, 8)), 0)


# --- registry ---------------------------------------------------------------------------------

def test_build_defense_composes_in_order():
    defense = build_defense("RSK + ff", center=3.0, keep_percent=50, std=None)
    assert isinstance(defense, Compose)
    rsk, ff = defense.defenses
    assert isinstance(rsk, RandomSharpen) and rsk.center == 3.0 and isinstance(ff, FrequencyFilter)
    assert ff.keep_percent == 50 and "RandomSharpen(center=3.0" in repr(defense)
    x = _images((2, 3, 32, 32))
    expected = ff(rsk(x, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(defense(x, torch.Generator().manual_seed(0)), expected)


def test_build_defense_single_names_and_none():
    assert DEFENSES.names()[:3] == ("rsk", "ssk", "ff")
    assert isinstance(build_defense("ssk", center=2.0, padding="reflect"), StaticSharpen)
    x = _images((1, 3, 8, 8))
    none = build_defense("none")
    assert isinstance(none, Identity) and none(x) is x


@pytest.mark.parametrize("spec, options, mentions", [
    ("blur", {}, "'blur'"),
    ("rsk+", {}, "rsk, ssk, ff"),
    ("ff", {"center": 2.0}, "center=2.0"),
    ("none", {"std": 0.1}, "std=0.1"),
    ("rsk", {"center": float("inf")}, "RandomSharpen: center must be a finite number (got inf)"),
    ("rsk", {"center": "2.5"}, "RandomSharpen: center must be a finite number (got '2.5')"),
    ("rsk", {"std": -0.1}, "RandomSharpen: std must be a number ≥ 0 (got -0.1)"),
    ("ssk", {"padding": "same"}, "StaticSharpen: padding must be one of 'valid', 'replicate', 'reflect', 'zeros' (got 'same')"),
    ("ff", {"keep_percent": 0}, "FrequencyFilter: keep_percent must be a number in (0, 100] (got 0)"),
    ("ff", {"keep_percent": 101}, "keep_percent must be a number in (0, 100] (got 101)"),
    ("ff", {"imagenet_variant": "yes"}, "FrequencyFilter: imagenet_variant must be True or False (got 'yes')"),
])
def test_build_defense_rejects_bad_input(spec, options, mentions):
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        build_defense(spec, **options)
    assert mentions in str(info.value)


# --- the Transform contract: per-sample use, torchvision pipelines, generators ----------------------

IMAGE_SPECS = ("rsk", "ssk", "ff", "coin", "jpeg", "gray", "bdr", "cutout", "rsk+ff", "rsk+ff+coin")


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_one_chw_image_is_a_batch_of_one(spec):
    x = _images((3, 32, 32), seed=4)
    defense = build_defense(spec)
    out = defense(x, torch.Generator().manual_seed(9))
    assert out.dim() == 3 and out.dtype == torch.float32
    assert torch.equal(out, defense(x[None], torch.Generator().manual_seed(9))[0])


def test_make_params_and_transform_split_the_draws_from_their_use():
    x = _images((4, 3, 16, 16))
    rsk = RandomSharpen()
    params = rsk.make_params(x, torch.Generator().manual_seed(2))
    assert torch.equal(params["kernels"], sample_sharpen_kernels(4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(rsk.transform(x, params), rsk(x, torch.Generator().manual_seed(2)))
    assert FrequencyFilter().make_params(x, None) == {}


def test_integer_images_are_refused_with_the_fix():
    with pytest.raises(UserInputError, match=r"^RandomSharpen takes float images in \[0, 1\] \(got torch.uint8\); "
                                             r"convert with v2.ToDtype\(torch.float32, scale=True\)"):
        RandomSharpen()(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserInputError, match="B×C×H×W batch or one C×H×W image"):
        FrequencyFilter()(torch.zeros(8, 8))
    with pytest.raises(UserInputError, match="after v2.ToImage"):
        build_defense("rsk+ff")(np.zeros((8, 8, 3), np.float32))


def test_reprs_come_from_the_constructor_parameters():
    assert repr(RandomSharpen()) == "RandomSharpen(center=2.5, std=0.1, padding='valid')"
    assert repr(StaticSharpen(center=3)) == "StaticSharpen(center=3.0, padding='valid')"
    assert repr(FrequencyFilter(50)) == "FrequencyFilter(keep_percent=50.0, imagenet_variant=False)"
    assert repr(build_defense("none")) == "Identity()"
    assert RandomSharpen(std=0.2).get_params() == {"center": 2.5, "std": 0.2, "padding": "valid"}


def test_defenses_in_a_torchvision_pipeline_are_seeded_by_torch_manual_seed():
    from PIL import Image
    from torchvision.transforms import v2

    photo = Image.fromarray((_images((32, 32, 3), seed=6).numpy() * 255).astype(np.uint8))
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.RandomCrop(32, padding=4)]
    for defense in (RandomSharpen(), FrequencyFilter(), build_defense("rsk+ff")):
        pipeline = v2.Compose([*to_float, defense])
        torch.manual_seed(0)
        out = pipeline(photo)
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.dim() == 3
        assert 0 <= out.min() and out.max() <= 1
        torch.manual_seed(0)
        assert torch.equal(pipeline(photo), out)  # deterministic under torch.manual_seed
        # the batched path on the same draws: the crop first, then the defense from the same global generator
        torch.manual_seed(0)
        crop = v2.Compose(to_float)(photo)
        assert torch.equal(defense(torch.stack([crop]), torch.default_generator)[0], out)
    # a deterministic defense gives the batched result for every image of a stack (to float rounding:
    # one GEMM over the batch sums in another order than one per image)
    crops = torch.stack([v2.Compose(to_float)(photo) for _ in range(3)])
    torch.testing.assert_close(torch.stack([FrequencyFilter()(c) for c in crops]), FrequencyFilter()(crops),
                               atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_draw_from_the_cuda_generator_and_refuse_a_cpu_one():
    x = _images((2, 3, 16, 16)).cuda()
    torch.cuda.manual_seed(4)
    out = RandomSharpen()(x)
    assert torch.equal(out, RandomSharpen()(x, torch.Generator("cuda").manual_seed(4)))
    with pytest.raises(UserInputError, match="the generator is on cpu but the images are on cuda"):
        RandomSharpen()(x, torch.Generator().manual_seed(0))
    with pytest.raises(UserInputError, match="the generator is on cuda"):
        RandomSharpen()(x.cpu(), torch.Generator("cuda").manual_seed(0))


# --- devices ----------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_defenses_run_on_cuda():
    x = _images((4, 3, 32, 32))
    gpu = torch.device("cuda")
    for spec in ("ssk+ff", "ff", "ssk"):  # deterministic: the CPU result is the reference
        out = build_defense(spec)(x.to(gpu))
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), build_defense(spec)(x), atol=1e-5, rtol=0)
    out = build_defense("rsk+ff")(x.to(gpu), torch.Generator(gpu).manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (4, 3, 30, 30)
    # RSK draws on the CUDA generator; the reference is CPU conv2d with those kernels.
    kernels = sample_sharpen_kernels(4, generator=torch.Generator(gpu).manual_seed(0)).cpu()
    out = RandomSharpen()(x.to(gpu), torch.Generator(gpu).manual_seed(0))
    expected = torch.stack([F.conv2d(image.unsqueeze(1), k.view(1, 1, 3, 3)).squeeze(1)
                            for image, k in zip(x, kernels)]).clamp(0, 1)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)
