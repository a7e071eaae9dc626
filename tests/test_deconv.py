"""The deconv defense: blind class-kernel estimation, Tikhonov deconvolution, trainer and CLI wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnable.analysis.metrics import psnr_per_image
from unlearnable.app.cli import main
from unlearnable.attacks import cuda_poison
from unlearnable.data import ImageDataset, save_dataset
from unlearnable.defenses import training_defense
from unlearnable.defenses.deconv import (
    MIN_TRACE_T,
    Deconvolve,
    Deconvolver,
    blur_matrix,
    blurred_mask,
    border_trace,
    deconvolve_blurred,
    estimate_kernels,
    exact_deconvolve,
    kernel_errors,
    neumann_laplacian,
    recover,
    replay,
    wiener_deconvolve,
)
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4
FAST = {"method": "spectrum", "rounds": 6, "restarts": 16, "steps": 200}


def smooth_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """uint8 n×3×size×size Gaussian fields with a 1/f amplitude spectrum (natural-image-like), 20..235."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    amplitude = 1 / (fy**2 + fx**2).sqrt().clamp_min(1 / size)
    noise = torch.randn(n, 3, size, size // 2 + 1, 2, generator=g)
    x = torch.fft.irfft2(torch.view_as_complex(noise) * amplitude, s=(size, size))
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    return (128 + 30 * x).clamp(20, 235).to(torch.uint8)


@pytest.fixture(scope="module")
def poisoned() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean, poisoned, labels, true kernels) for 1,600 synthetic images, CUDA k=3 p_b=0.3 seed 0."""
    clean = smooth_images(1600)
    labels = torch.arange(1600) % CLASSES
    poison = cuda_poison(clean, labels, CLASSES, progress=False)
    return clean, poison.images, labels, torch.tensor(poison.key["kernels"])


def test_border_estimate_matches_the_key(poisoned):
    _, images, labels, true = poisoned
    estimated = estimate_kernels(images, labels, CLASSES, 3)
    assert estimated.shape == (CLASSES, 3, 3) and bool((estimated >= 0).all())
    torch.testing.assert_close(estimated.sum(dim=(1, 2)), torch.ones(CLASSES))
    errors = kernel_errors(estimated, true)
    assert float(errors.max()) < 0.05, errors  # tolerance 5% relative L2 per class (measured below 1%)


@pytest.mark.parametrize("size", [3, 5])
def test_border_search_finds_the_kernel_size(size):
    clean = smooth_images(800, seed=1)
    labels = torch.arange(800) % CLASSES
    poison = cuda_poison(clean, labels, CLASSES, kernel_size=size, progress=False)
    estimated = estimate_kernels(poison.images, labels, CLASSES)
    assert estimated.shape == (CLASSES, size, size)
    assert float(kernel_errors(estimated, torch.tensor(poison.key["kernels"])).max()) < 0.1


def test_spectrum_estimate_matches_the_key_with_flip_resolved(poisoned):
    _, images, labels, true = poisoned
    estimated = estimate_kernels(images, labels, CLASSES, 3, **FAST)
    assert estimated.shape == (CLASSES, 3, 3) and bool((estimated >= 0).all())
    torch.testing.assert_close(estimated.sum(dim=(1, 2)), torch.ones(CLASSES))
    errors = kernel_errors(estimated, true)
    flipped = kernel_errors(estimated.flip(-2, -1), true)
    assert float(errors.max()) < 0.25, errors  # tolerance: 25% relative L2 per class (measured 15-18%)
    assert bool((errors < flipped).all())  # the 180° rotation is resolved, not just the magnitude


@pytest.mark.parametrize("method", ["border", "spectrum"])
def test_estimation_is_deterministic(poisoned, method):
    _, images, labels, _ = poisoned
    subset = slice(0, 400)
    options = {"rounds": 1, "restarts": 4, "steps": 30} if method == "spectrum" else {}
    first = estimate_kernels(images[subset], labels[subset], CLASSES, 3, method=method, **options)
    second = estimate_kernels(images[subset], labels[subset], CLASSES, 3, method=method, **options)
    assert torch.equal(first, second)


def test_partial_poisoning_deconvolves_only_the_blurred_images():
    clean = smooth_images(1600, seed=2)
    labels = torch.arange(1600) % CLASSES
    poison = cuda_poison(clean, labels, CLASSES, mix=0.5, progress=False)
    blurred = torch.zeros(1600, dtype=torch.bool)
    blurred[poison.key["poisoned_indices"]] = True
    recovered = recover(ImageDataset(poison.images, labels, [str(c) for c in range(CLASSES)], {}))
    changed = (recovered.images != poison.images).flatten(1).any(dim=1)
    assert recovered.meta["deconv"]["deconvolved"] == int(changed.sum())
    assert float((changed == blurred).double().mean()) > 0.95
    estimated = torch.tensor(recovered.meta["deconv"]["kernels"])
    assert float(kernel_errors(estimated, torch.tensor(poison.key["kernels"])).max()) < 0.05
    assert float((blurred_mask(poison.images, labels, estimated) == blurred).double().mean()) > 0.95


def test_recover_leaves_clean_data_untouched():
    clean = smooth_images(800, seed=3)
    labels = torch.arange(800) % CLASSES
    recovered = recover(ImageDataset(clean, labels, [str(c) for c in range(CLASSES)], {}))
    assert recovered.meta["deconv"]["deconvolved"] == 0
    assert torch.equal(recovered.images, clean)


def test_recover_leaves_clean_data_untouched_even_when_the_kernel_search_finds_kernels():
    """A kernel fitted to a clean set (here forced to 9×9) is only used where the border trace is significant."""
    clean = smooth_images(400, seed=4)
    labels = torch.arange(400) % CLASSES
    fitted = Deconvolver(kernel_size=9).fit(ImageDataset(clean, labels, [str(c) for c in range(CLASSES)], {}))
    assert fitted.kernel_size_ == 1 and not bool(fitted.blurred_.any())
    assert float(border_trace(clean, labels, CLASSES, 9).abs().max()) < MIN_TRACE_T


def test_border_trace_separates_blurred_from_clean_classes(poisoned):
    clean, images, labels, _ = poisoned
    mixed = torch.where((labels < 2)[:, None, None, None], images, clean)[:200]  # classes 0, 1 blurred
    t = border_trace(mixed, labels[:200], CLASSES, 3)
    assert bool((t[:2] > 3 * MIN_TRACE_T).all()), t
    assert bool((t[2:].abs() < 3).all()), t


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_blur_matrix_is_the_poisons_blur(padding):
    g = torch.Generator().manual_seed(0)
    kernel = torch.rand(5, 5, generator=g, dtype=torch.float64)
    image = torch.rand(1, 1, 7, 9, generator=g, dtype=torch.float64)
    mode = "reflect" if padding == "reflect" else "constant"
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(image, (2, 2, 2, 2), mode=mode), kernel[None, None])
    matrix = blur_matrix(kernel, (7, 9), padding)
    torch.testing.assert_close(matrix @ image.flatten(), expected.flatten())


def test_neumann_laplacian_is_the_squared_gradient():
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    squared = x.diff(dim=0).square().sum() + x.diff(dim=1).square().sum()
    torch.testing.assert_close(x.flatten() @ neumann_laplacian((6, 5)) @ x.flatten(), squared)


def test_exact_inversion_undoes_the_blur_better_than_wiener(poisoned):
    clean, images, labels, true = poisoned
    exact = exact_deconvolve(images[:200], labels[:200], true, 1e-4)
    wiener = wiener_deconvolve(images[:200], labels[:200], true)
    assert exact.dtype == torch.uint8 and exact.shape == images[:200].shape and int(exact.amax()) == 255

    def error(restored: torch.Tensor) -> float:  # after the least-squares gain (CUDA rescaled each image)
        a, b = restored.double(), clean[:200].double()
        gain = (a * b).sum(dim=(1, 2, 3), keepdim=True) / a.square().sum(dim=(1, 2, 3), keepdim=True)
        return float((a * gain - b).square().mean())

    assert error(exact) < 0.8 * error(wiener) < 0.8 * error(images[:200])  # measured 19.9, 31.1


def test_exact_inversion_checks_its_inputs(poisoned):
    _, images, labels, true = poisoned
    with pytest.raises(UserInputError, match='at most 4096 pixels, got 65×65; use inversion="wiener"'):
        exact_deconvolve(torch.zeros(4, 3, 65, 65, dtype=torch.uint8), labels[:4], true)
    with pytest.raises(UserInputError, match="regularization must be a number > 0"):
        exact_deconvolve(images[:4], labels[:4], true, 0.0)


def test_wiener_with_true_kernels_raises_psnr(poisoned):
    clean, images, labels, true = poisoned
    restored = wiener_deconvolve(images[:200], labels[:200], true)
    assert restored.dtype == torch.uint8 and restored.shape == images[:200].shape
    assert int(restored.amax()) == 255

    # Compare shapes, not brightness: CUDA rescaled every image by its max, so match the gain first.
    def fitted(a: torch.Tensor) -> torch.Tensor:
        a, b = a.double(), clean[:200].double()
        gain = (a * b).sum(dim=(1, 2, 3), keepdim=True) / a.square().sum(dim=(1, 2, 3), keepdim=True)
        return (a * gain).clamp(0, 255).round().to(torch.uint8)

    gain = (
        psnr_per_image(fitted(restored), clean[:200]).mean() - psnr_per_image(fitted(images[:200]), clean[:200]).mean()
    )
    assert float(gain) > 3.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, y: estimate_kernels(x.float(), y, CLASSES, 3), "uint8"),
        (lambda x, y: estimate_kernels(x, y[:-1], CLASSES, 3), "labels"),
        (lambda x, y: estimate_kernels(x, y, CLASSES + 1, 3), "every class"),
        (lambda x, y: estimate_kernels(x, y, CLASSES, 4), "kernel-size"),
        (lambda x, y: estimate_kernels(x, y, CLASSES, 3, method="blind"), "unknown deconv method"),
        (lambda x, y: wiener_deconvolve(x, y, torch.ones(CLASSES, 3, 3), regularization=0.0), "regularization"),
        (lambda x, y: wiener_deconvolve(x, y, torch.ones(CLASSES, 2, 2)), "odd k"),
    ],
)
def test_bad_input_raises_one_line(poisoned, call, message):
    _, images, labels, _ = poisoned
    with pytest.raises(UserInputError, match=message) as info:
        call(images[:40], labels[:40])
    assert "\n" not in str(info.value)


def _dataset(images: torch.Tensor, labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(images, labels, [str(c) for c in range(CLASSES)], {"attack": "cuda"})


@pytest.mark.parametrize("kernel_size", [None, 3])
def test_deconvolver_fit_transform_is_the_border_recipe(poisoned, kernel_size):
    """fit: estimate, find the blurred images, estimate again from them; transform: deconvolve the blurred ones."""
    _, images, labels, _ = poisoned
    images, labels = images[:400], labels[:400]
    first = estimate_kernels(images, labels, CLASSES, kernel_size)
    assert bool((border_trace(images, labels, CLASSES, first.shape[-1]) >= MIN_TRACE_T).all())
    kernels = estimate_kernels(images, labels, CLASSES, first.shape[-1], mask=blurred_mask(images, labels, first))
    expected, mask = deconvolve_blurred(images, labels, kernels, 0.02, "border", "exact")
    fitted = Deconvolver(kernel_size, regularization=0.02).fit(_dataset(images, labels))
    assert torch.equal(fitted.kernels_, kernels) and fitted.kernel_size_ == kernels.shape[-1] == 3
    assert torch.equal(fitted.blurred_, blurred_mask(images, labels, first))
    out = fitted.transform(_dataset(images, labels))
    assert torch.equal(out.images, expected) and torch.equal(out.labels, labels)
    assert out.meta["attack"] == "cuda" and out.meta["deconv"] == {
        "kernels": kernels.tolist(),
        "kernel_size": 3,
        "regularization": 0.02,
        "method": "border",
        "inversion": "exact",
        "deconvolved": int(mask.sum()),
    }
    assert torch.equal(Deconvolver(kernel_size, 0.02).fit_transform(_dataset(images, labels)).images, expected)
    assert torch.equal(recover(_dataset(images, labels), kernel_size, 0.02).images, expected)
    assert torch.equal(Deconvolve(kernel_size, 0.02)(_dataset(images, labels)).images, expected)


def test_deconvolver_state_dict_replays_bit_identically(poisoned):
    _, images, labels, _ = poisoned
    train, other = _dataset(images[:400], labels[:400]), _dataset(images[400:800], labels[400:800])
    fitted = Deconvolver(3).fit(train)
    state = json.loads(json.dumps(fitted.state_dict()))  # through JSON, as results.json keeps it
    replayed = Deconvolver.from_state_dict(state)
    assert torch.equal(replayed.kernels_, fitted.kernels_) and replayed.kernel_size_ == 3 and replayed.blurred_ is None
    for dataset in (train, other):
        expected = fitted.transform(dataset)
        assert torch.equal(replayed.transform(dataset).images, expected.images)
        assert torch.equal(replay(dataset, expected.meta["deconv"]).images, expected.images)
    assert replay(train, {"kernels": state["kernels"], "regularization": 0.01}).meta["deconv"]["regularization"] == 0.01
    # A record from before the exact inversion (no "inversion" key) replays as the Wiener one it was made with.
    old = {"kernels": state["kernels"], "regularization": 0.01, "method": "border"}
    expected, _ = deconvolve_blurred(train.images, train.labels, fitted.kernels_, 0.01, "border", "wiener")
    assert torch.equal(replay(train, old).images, expected)


def test_deconvolver_resolves_inversion_and_regularization(poisoned):
    _, images, labels, _ = poisoned
    small = Deconvolver(3).fit(_dataset(images[:400], labels[:400]))
    assert (small.inversion_, small.regularization_) == ("exact", 1e-3)
    big = torch.nn.functional.interpolate(images[:400].float(), size=(72, 72)).round().to(torch.uint8)
    large = Deconvolver(3).fit(_dataset(big, labels[:400]))
    assert (large.inversion_, large.regularization_) == ("wiener", 0.01)
    assert Deconvolver(3, 0.05, inversion="wiener").fit(_dataset(images[:400], labels[:400])).regularization_ == 0.05


def test_deconvolver_needs_fit_and_checks_its_options(poisoned):
    _, images, labels, _ = poisoned
    with pytest.raises(UserInputError, match="not fitted yet: call fit"):
        Deconvolver().transform(_dataset(images[:40], labels[:40]))
    with pytest.raises(UserInputError, match="not fitted yet"):
        Deconvolver().state_dict()
    for options, message in [
        ({"kernel_size": "3"}, "Deconvolve: kernel_size must be None or an odd integer ≥ 1 (got '3')"),
        ({"kernel_size": 4}, "Deconvolve: kernel_size must be None or an odd integer ≥ 1 (got 4)"),
        ({"regularization": 0}, "Deconvolve: regularization must be None or a number > 0 (got 0)"),
        ({"method": "blind"}, "Deconvolve: method must be one of 'border', 'spectrum' (got 'blind')"),
        ({"inversion": "fft"}, "Deconvolve: inversion must be one of 'auto', 'exact', 'wiener' (got 'fft')"),
    ]:
        with pytest.raises(UserInputError) as info:
            Deconvolve(**options)
        assert str(info.value) == message
    with pytest.raises(UserInputError, match="^Deconvolver: kernel_size"):
        Deconvolver(kernel_size=2.0)
    assert (
        repr(Deconvolver()) == "Deconvolver(kernel_size=None, regularization=None, method='border', inversion='auto')"
    )
    assert (
        repr(training_defense("deconv-spectrum").preprocess)
        == "Deconvolve(kernel_size=None, regularization=None, method='spectrum', inversion='auto')"
    )


def test_chain_places_deconv_first_and_only_once():
    defense = training_defense("deconv+coin", kernel_size=3)
    assert defense.preprocess is not None and defense.after_crop is not None
    with pytest.raises(UserInputError, match="first"):
        training_defense("rsk+deconv")
    with pytest.raises(UserInputError, match="at most one"):
        training_defense("deconv+deconv")


def test_trainer_applies_deconv_once(poisoned, monkeypatch, tmp_path):
    import unlearnable.training.trainer as train_module
    from unlearnable.defenses import deconv

    _, images, labels, _ = poisoned
    calls = []

    def counting(self, dataset):  # a fast stand-in
        calls.append((len(dataset), self.kernel_size))
        return ImageDataset(255 - dataset.images, dataset.labels, dataset.classes, dict(dataset.meta))

    monkeypatch.setattr(deconv.Deconvolver, "fit_transform", counting)
    ds = ImageDataset(images[:256], labels[:256], [str(c) for c in range(CLASSES)], {})
    recipe = train_module.resolve_recipe("quick", epochs=1, batch_size=64, test_batch_size=64)
    config = train_module.resolve_config(
        train_module.TrainConfig(
            out=str(tmp_path),
            model="tiny",
            recipe=recipe,
            device="cpu",
            defense="deconv",
            defense_options={"kernel_size": 3},
        )
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, CLASSES))
    trainer = train_module.Trainer(config, ds, ds, model, None)
    assert calls == [(256, 3)]
    assert torch.equal(trainer.train_loader.images.cpu(), 255 - images[:256])


@pytest.mark.slow
def test_cli_recover_writes_dataset_kernels_and_figure(poisoned, tmp_path, capsys):
    _, images, labels, true = poisoned
    src = tmp_path / "poisoned"
    src.mkdir()
    save_dataset(
        src,
        ImageDataset(
            images[:400], labels[:400], [str(c) for c in range(CLASSES)], {"attack": "cuda", "kernels": true.tolist()}
        ),
    )
    out = tmp_path / "recovered"
    assert main(["recover", str(src), "--out", str(out), "--kernel-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "kernel error" in printed and "mean kernel error" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert np.asarray(meta["deconv"]["kernels"]).shape == (CLASSES, 3, 3)
    assert (out / "kernels.png").stat().st_size > 0
    assert _exit_code(["recover", str(src), "--out", str(out), "--kernel-size", "3"]) == 2  # exists, no --overwrite
    assert _exit_code(["recover", str(src), "--out", str(tmp_path / "x"), "--kernel-size", "4"]) == 2


def _exit_code(argv: list[str]) -> int:
    """`main`'s exit code, whether it returns it or argparse exits with it (a usage error)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_report_shows_kernels_and_detection_for_a_deconv_run(poisoned, tmp_path):
    from unlearnable.app.report import write_report

    _, images, labels, true = poisoned
    data = tmp_path / "poisoned"
    data.mkdir()
    dataset = ImageDataset(
        images[:800],
        labels[:800],
        [str(c) for c in range(CLASSES)],
        {"attack": "cuda", "kernels": true.tolist(), "poisoned_indices": list(range(800))},
    )
    save_dataset(data, dataset)
    record = recover(dataset, kernel_size=3).meta["deconv"]
    run = tmp_path / "runs" / "cuda-deconv"
    run.mkdir(parents=True)
    (run / "results.json").write_text(
        json.dumps(
            {
                "name": "cuda-deconv",
                "status": "complete",
                "config": {"train": str(data), "defense": "deconv"},
                "train_data": {"attack": "cuda"},
                "final": {"test_acc_last": 50.0},
                "preprocessed": {"deconv": record},
            }
        )
    )
    markdown = write_report([run], tmp_path / "report")[0].read_text()
    assert "## Deconvolution diagnostics" in markdown
    assert f"{record['deconvolved']} of the 800 poisoned images were deconvolved" in markdown
    errors = kernel_errors(torch.tensor(record["kernels"]), true)
    assert f"| 0 | {float(errors[0]):.1%} |" in markdown
    assert (tmp_path / "report" / "figures" / "kernels.png").stat().st_size > 0


def test_cuda_reflect_leaves_no_border_trace():
    clean = smooth_images(400, seed=4)
    labels = torch.arange(400) % CLASSES
    zeros = cuda_poison(clean, labels, CLASSES, progress=False)
    reflect = cuda_poison(clean, labels, CLASSES, progress=False, border="reflect")
    assert reflect.key["params"]["border"] == "reflect" and reflect.key["kernels"] == zeros.key["kernels"]
    inside_reflect, inside_zeros = (p.images[:, :, 1:-1, 1:-1].double() for p in (reflect, zeros))
    gain = (inside_reflect * inside_zeros).sum(dim=(1, 2, 3), keepdim=True) / inside_zeros.square().sum(
        dim=(1, 2, 3), keepdim=True
    )
    assert float((inside_reflect - gain * inside_zeros).abs().max()) <= 2  # the same blur inside, up to the max rescale
    kernels = torch.tensor(zeros.key["kernels"])
    assert float(blurred_mask(zeros.images, labels, kernels).double().mean()) > 0.95
    assert float(blurred_mask(reflect.images, labels, kernels).double().mean()) < 0.05
