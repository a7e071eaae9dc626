"""`unlearnable detect`: the features by hand, the verdict on synthetic data, the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unlearnable.analysis.detect import (
    COMPRESSION_LIMIT,
    MIN_SPECTRAL_PER_CLASS,
    SPECTRAL_THRESHOLD,
    EdgeEvidence,
    class_spectra,
    decide,
    detect,
    edge_features,
    kernel_basis,
    log_spectra,
    log_variance_bias,
    looks_convolved,
    spectral_evidence,
)
from unlearnable.app.cli import main
from unlearnable.app.detect import detect_command
from unlearnable.attacks.apply import poison_dataset
from unlearnable.data import ImageDataset, load_dataset, save_dataset, stratified_subset
from unlearnable.errors import UserInputError

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
    return ImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), [f"class{c}" for c in range(classes)]
    )


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
        pairs = [
            (x[c, 0, :], x[c, 1, :]),
            (x[c, 3, :], x[c, 2, :]),  # top, bottom rows
            (x[c, :, 0], x[c, :, 1]),
            (x[c, :, 4], x[c, :, 3]),
        ]  # left, right columns
        expected += [math.log((edge.mean() + 1) / (inside.mean() + 1)) for edge, inside in pairs]
    features = edge_features(images)
    assert features.shape == (1, 8) and features.dtype == torch.float32
    torch.testing.assert_close(features[0].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # A zero-padded blur darkens every edge of a flat image: all features negative, inside untouched.
    flat = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    blurred = poison_dataset(
        ImageDataset(flat, torch.zeros(1, dtype=torch.int64), ["a"]), "cuda", progress=False
    ).images
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
    gray = ImageDataset(
        reference.images.float().mean(1, keepdim=True).round().to(torch.uint8), reference.labels, reference.classes
    )
    poisoned = poison_dataset(data, "cuda", seed=1, progress=False)
    a, b = detect(poisoned, gray, seed=3), detect(poisoned, gray, seed=3)
    assert a.poisoned and a.to_json() == b.to_json()


def test_additive_classwise_shift_is_not_called_a_convolution(clean_pair):
    """Strong class-wise additive noise shifts class spectra but shrinks the spread: no convolution verdict."""
    data, reference = clean_pair
    rng = np.random.default_rng(0)
    patterns = torch.from_numpy(rng.normal(0, 25, (3, 3, 32, 32)))
    noisy = (data.images.double() + patterns[data.labels]).clamp(0, 255).to(torch.uint8)
    s = spectral_evidence(
        class_spectra(noisy, data.labels, 3), class_spectra(reference.images, reference.labels, 3), 32, 32
    )
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
    # 8 noise images per class: too few for the spectral test, but every image's edges show the blur.
    assert first.startswith("looks convolution-poisoned (100% of images flagged at the edges")
    report = json.loads((out / "detect.json").read_text())
    assert report["verdict"] == first and set(report["spectral"]["per_class"]) == {"cat", "dog", "ship"}
    assert report["poisoned"] and report["decided_by"] == ["edge"] and report["edge"]["vote"]
    assert (out / "detect_spectra.png").stat().st_size > 1000
    # An explicit reference works the same (a plain folder of clean images: all of it is used).
    assert main(["detect", str(tiny_folder / "train"), "--reference", str(tiny_folder / "test")]) == 0
    assert capsys.readouterr().out.startswith(("no sign of a class-wise convolution", "cannot tell"))


# --- small sets ---------------------------------------------------------------------------------


def test_log_variance_bias_matches_simulation():
    """E[log s²] − log σ² of n Gaussian values: the delta method is within 0.03 of the truth for n ≥ 5."""
    rng = np.random.default_rng(0)
    for n in (5, 10, 40):
        simulated = np.log(rng.normal(size=(200_000, n)).var(1, ddof=1)).mean()
        predicted = float(log_variance_bias(torch.tensor(float(n)), torch.tensor(0.0)))
        assert abs(simulated - predicted) < 0.03 and simulated < -0.02


def test_spread_of_a_small_clean_set_is_not_biased(clean_pair):
    """5 clean images per class against 60: the corrected spread stays near 0 (uncorrected it reads ≈ −0.3)."""
    data, reference = clean_pair
    small = stratified_subset(data, 5, seed=4)
    stats, ref = class_spectra(small.images, small.labels, 3), class_spectra(reference.images, reference.labels, 3)
    s = spectral_evidence(stats, ref, 32, 32)
    raw = float(torch.log(stats.variance() / ref.variance()).mean())
    assert raw < -0.2 and abs(s.spread) < 0.1


@pytest.mark.parametrize("per_class", [4, 8, 20])
def test_small_sets_get_the_right_verdict_both_ways(clean_pair, per_class):
    data, reference = clean_pair
    small = stratified_subset(data, per_class, seed=per_class)
    clean = detect(small, reference)
    assert not clean.poisoned and clean.verdict().startswith("no sign of a class-wise convolution")
    poisoned = detect(poison_dataset(small, "cuda", seed=2, progress=False), reference)
    assert poisoned.poisoned and poisoned.verdict().startswith("looks convolution-poisoned")
    assert "edge" in poisoned.decided_by and poisoned.edge.flagged > 0.8
    if per_class < MIN_SPECTRAL_PER_CLASS and "spectral" not in poisoned.decided_by:
        assert "cannot clear with" in poisoned.verdict()


def _edge(flagged: float, fpr: float, tpr: float, share: float | None, images: int = 30) -> EdgeEvidence:
    return EdgeEvidence(flagged, fpr, tpr, share, [], [0.0] * 4, [0.0] * 4, images, 100)


def test_decide_rules(clean_pair):
    data, reference = clean_pair
    weak = spectral_evidence(
        class_spectra(data.images, data.labels, 3), class_spectra(reference.images, reference.labels, 3), 32, 32
    )
    assert not looks_convolved(weak)
    assert decide(weak, _edge(0.97, 0.02, 0.9, 1.0), 3) == (True, ("edge",), None)
    assert decide(weak, _edge(0.04, 0.02, 0.9, 0.02), 3) == (False, (), None)  # the edges speak: clean
    # A separating detector that flags a few images more than its false-positive rate is no vote.
    assert decide(weak, _edge(0.30, 0.02, 0.9, 0.31), 50)[0] is False
    # 2 of 3 flagged over a 2% false-positive rate is significant, yet 3 images are weak evidence of a share.
    assert decide(weak, _edge(0.10, 0.02, 0.9, 0.09, images=300), 50)[0] is False
    poisoned, votes, why = decide(weak, _edge(0.5, 0.4, 0.6, None), 3)
    assert not poisoned and votes == () and "too few for the spectral test" in why
    assert decide(weak, _edge(0.5, 0.4, 0.6, None), MIN_SPECTRAL_PER_CLASS) == (False, (), None)


def test_cannot_tell_verdict_is_one_line(clean_pair):
    data, reference = clean_pair
    d = detect(stratified_subset(data, 3, seed=0), reference)
    d.poisoned, d.decided_by, d.undecided = False, (), "3 images per class are too few"
    assert d.verdict() == "cannot tell: 3 images per class are too few" and "\n" not in d.verdict()


def test_small_cifar_sets_clean_and_cuda(shared_cifar):
    """200 CIFAR-10 test images (20 per class) against the other 9,800: clean stays clean, CUDA is called."""
    full = load_dataset(str(shared_cifar), "test")
    data = stratified_subset(full, 20, seed=1)
    rest = np.setdiff1d(np.arange(len(full)), data.meta["subset"]["indices"])
    reference = stratified_subset(full.subset(rest), 300, seed=2)
    clean = detect(data, reference)
    assert not clean.poisoned and clean.verdict().startswith("no sign")
    protected = detect(poison_dataset(data, "cuda", progress=False), reference)
    assert protected.decided_by == ("spectral", "edge") and protected.edge.flagged > 0.9


# --- bad input --------------------------------------------------------------------------------


def test_labels_beyond_the_class_list_are_a_user_error(clean_pair, tmp_path, capsys):
    data, reference = clean_pair
    shifted = ImageDataset(data.images, data.labels + 1, data.classes)
    with pytest.raises(UserInputError, match=r"labels from 1 to 3 but names 3 classes"):
        detect(shifted, reference)
    saved = tmp_path / "saved"
    saved.mkdir()
    save_dataset(saved, data, reference)
    meta = json.loads((saved / "meta.json").read_text())
    meta["classes"] = meta["classes"][:2]  # meta.json disagrees with labels.npy
    (saved / "meta.json").write_text(json.dumps(meta))
    assert main(["detect", str(saved), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels" in err and "2 classes" in err and "Traceback" not in err
    assert not (tmp_path / "ev" / "detect.json").exists()


def exit_code(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("value", ["0", "-5", "3"])
def test_bad_max_images_exits_2_before_reading(tiny_folder, tmp_path, capsys, value):
    assert exit_code(["detect", str(tiny_folder), "--max-images", value, "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-images" in err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"seed": -1}, "--seed"),
        ({"device": "tpu"}, "device"),
        ({"image_size": 1}, "--image-size"),
        ({"max_images": 0}, "--max-images"),
    ],
)
def test_detect_command_checks_arguments_first(tmp_path, kwargs, needle):
    with pytest.raises(UserInputError, match=needle):
        detect_command(str(tmp_path / "not-read"), out=tmp_path / "ev", **kwargs)
    assert not (tmp_path / "ev").exists()


def test_mixed_size_collection_at_a_working_size(tmp_path):
    rng = np.random.default_rng(0)
    from PIL import Image

    for split, count in (("train", 12), ("test", 12)):
        for c in ("a", "b"):
            (tmp_path / "photos" / split / c).mkdir(parents=True)
            for i in range(count):
                w, h = rng.integers(20, 60, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    tmp_path / "photos" / split / c / f"{i}.png"
                )
    with pytest.raises(UserInputError, match="--image-size"):
        detect_command(str(tmp_path / "photos"))
    detection = detect_command(str(tmp_path / "photos"), image_size=16)
    assert detection.info["shape"] == "3×16×16" and not detection.poisoned
