"""`unlearnable detect`: the features by hand, the verdict on synthetic data, the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unlearnable.cli import main
from unlearnable.data import ImageDataset
from unlearnable.detect import (COMPRESSION_LIMIT, SPECTRAL_THRESHOLD, class_spectra, detect, edge_features,
                                kernel_basis, log_spectra, looks_convolved, spectral_evidence)
from unlearnable.errors import UserInputError
from unlearnable.protect import poison_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_dataset(per_class: int, seed: int, classes: int = 3, size: int = 32) -> ImageDataset:
    """RGB images: a random low-frequency field plus white texture whose strength depends on the class
    (so clean classes differ in spectrum, as real ones do), offset away from black borders."""
    rng = np.random.default_rng(seed)
    n = classes * per_class
    labels = np.repeat(np.arange(classes), per_class)
    y, x = np.mgrid[0:size, 0:size] / size
    fields = np.zeros((n, 3, size, size))
    for _ in range(4):
        fy, fx = rng.uniform(0, 3, (2, n, 1, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 3, 1, 1))
        fields += rng.uniform(10, 30, (n, 1, 1, 1)) * np.cos(2 * np.pi * (fy * y + fx * x) + phase)
    texture = rng.normal(0, 1, fields.shape) * (6 + 4 * labels)[:, None, None, None]
    images = np.clip(128 + fields + texture, 0, 255).astype(np.uint8)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                        [f"class{c}" for c in range(classes)])


@pytest.fixture(scope="module")
def clean_pair() -> tuple[ImageDataset, ImageDataset]:
    """(data, reference): two independent draws of the same clean distribution."""
    return smooth_dataset(60, seed=1), smooth_dataset(60, seed=2)


# --- features ---------------------------------------------------------------------------------

def test_edge_features_by_hand():
    images = torch.arange(2 * 4 * 5, dtype=torch.uint8).view(1, 2, 4, 5) * 3
    x = images[0].double()
    expected = []
    for c in range(2):
        pairs = [(x[c, 0, :], x[c, 1, :]), (x[c, 3, :], x[c, 2, :]),  # top, bottom rows
                 (x[c, :, 0], x[c, :, 1]), (x[c, :, 4], x[c, :, 3])]  # left, right columns
        expected += [math.log((edge.mean() + 1) / (inside.mean() + 1)) for edge, inside in pairs]
    features = edge_features(images)
    assert features.shape == (1, 8) and features.dtype == torch.float32
    torch.testing.assert_close(features[0].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # A zero-padded blur darkens every edge of a flat image: all features negative, inside untouched.
    flat = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    blurred = poison_dataset(ImageDataset(flat, torch.zeros(1, dtype=torch.int64), ["a"]), "cuda", progress=False).images
    assert (edge_features(blurred) < -0.05).all() and edge_features(flat).abs().max() == 0


def test_log_spectra_by_hand():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 6, 8), dtype=np.uint8))
    x = images.double().numpy().mean(1)
    x -= x.mean((1, 2), keepdims=True)
    window = np.outer(np.hanning(6), np.hanning(8))  # numpy's hanning is the symmetric Hann window
    power = np.abs(np.fft.rfft2(x * window)) ** 2
    log_power = np.log(power + 1.0).reshape(2, -1)[:, 1:]
    expected = log_power - log_power.mean(1, keepdims=True)
    np.testing.assert_allclose(log_spectra(images).numpy(), expected, atol=1e-4)


def test_kernel_basis_spans_3x3_power_spectra():
    """|K̂(ω)|² of any 3×3 kernel is a cosine polynomial with lags ≤ 2, in `log_spectra`'s frequency order."""
    kernel = torch.rand(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    padded = torch.zeros(12, 10, dtype=torch.float64)
    padded[:3, :3] = kernel
    power = torch.fft.rfft2(padded).abs().square().flatten()[1:]
    basis = kernel_basis(12, 10, lag=2)
    residual = power - basis @ torch.linalg.lstsq(basis, power[:, None]).solution[:, 0]
    assert basis.shape == (12 * 6 - 1, 13) and residual.abs().max() < 1e-9
    assert (power - basis[:, :6] @ torch.linalg.lstsq(basis[:, :6], power[:, None]).solution[:, 0]).abs().max() > 1e-2


def test_class_spectra_chunks_match_direct_moments():
    ds = smooth_dataset(5, seed=3, size=12)
    stats = class_spectra(ds.images, ds.labels, 3, chunk=4)
    spectra = log_spectra(ds.images).double()
    for c in range(3):
        rows = spectra[ds.labels == c]
        torch.testing.assert_close(stats.mean[c], rows.mean(0))
        torch.testing.assert_close(stats.variance()[c], rows.var(0), atol=1e-9, rtol=1e-6)


# --- the verdict ------------------------------------------------------------------------------

def test_clean_is_not_flagged_and_cuda_is(clean_pair):
    data, reference = clean_pair
    clean = detect(data, reference)
    assert not clean.poisoned and clean.spectral.score < SPECTRAL_THRESHOLD / 2
    assert clean.verdict().startswith("no sign of a class-wise convolution")
    poisoned = detect(poison_dataset(data, "cuda", seed=5, progress=False), reference)
    assert poisoned.poisoned and poisoned.spectral.score > 2 * SPECTRAL_THRESHOLD
    assert poisoned.spectral.kernel_fit > 0.6
    assert poisoned.verdict().startswith("looks convolution-poisoned (score")
    # The edge detector (trained on the reference with fresh keys) sees it too.
    assert clean.edge.flagged < 0.2 and poisoned.edge.flagged > 0.8
    assert poisoned.edge.reference_tpr - poisoned.edge.reference_fpr > 0.5


def test_grayscale_reference_for_rgb_data_and_same_seed_same_answer(clean_pair):
    data, reference = clean_pair
    gray = ImageDataset(reference.images.float().mean(1, keepdim=True).round().to(torch.uint8),
                        reference.labels, reference.classes)
    poisoned = poison_dataset(data, "cuda", seed=1, progress=False)
    a, b = detect(poisoned, gray, seed=3), detect(poisoned, gray, seed=3)
    assert a.poisoned and a.to_json() == b.to_json()


def test_additive_classwise_shift_is_not_called_a_convolution(clean_pair):
    """Strong class-wise additive noise shifts class spectra but shrinks the spread: no convolution verdict."""
    data, reference = clean_pair
    rng = np.random.default_rng(0)
    patterns = torch.from_numpy(rng.normal(0, 25, (3, 3, 32, 32)))
    noisy = (data.images.double() + patterns[data.labels]).clamp(0, 255).to(torch.uint8)
    s = spectral_evidence(class_spectra(noisy, data.labels, 3), class_spectra(reference.images, reference.labels, 3), 32, 32)
    assert s.score >= SPECTRAL_THRESHOLD and s.spread < -COMPRESSION_LIMIT * s.shift
    assert not looks_convolved(s)


def test_mismatched_reference_is_a_user_error(clean_pair):
    data, reference = clean_pair
    with pytest.raises(UserInputError, match="same image size"):
        detect(data, smooth_dataset(3, seed=0, size=16))
    with pytest.raises(UserInputError, match="classes"):
        detect(data, smooth_dataset(3, seed=0, classes=2))


# --- the command line -------------------------------------------------------------------------

def test_cli_bad_path_exits_2(capsys, tmp_path):
    assert main(["detect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file" in err


def test_cli_needs_a_reference_without_test_split(capsys, tmp_path, tiny_folder):
    assert main(["detect", str(tiny_folder / "train")]) == 2
    assert "--reference" in capsys.readouterr().err


def test_cli_verdict_and_outputs(capsys, tmp_path, tiny_folder):
    protected = tmp_path / "protected"
    assert main(["poison", "--data", str(tiny_folder), "--out", str(protected)]) == 0
    capsys.readouterr()
    out = tmp_path / "evidence"
    assert main(["detect", str(protected), "--out", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(("looks convolution-poisoned (score", "no sign of a class-wise convolution (score"))
    report = json.loads((out / "detect.json").read_text())
    assert report["verdict"] == first and set(report["spectral"]["per_class"]) == {"cat", "dog", "ship"}
    assert (out / "detect_spectra.png").stat().st_size > 1000
    # An explicit reference works the same (a plain folder of clean images: all of it is used).
    assert main(["detect", str(tiny_folder / "train"), "--reference", str(tiny_folder / "test")]) == 0
    assert capsys.readouterr().out.startswith(("looks", "no sign"))
