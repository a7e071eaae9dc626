"""The model-free poisons OPS, LSP, AR and class-wise noise: keys, masks, references, CLI."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unlearnable.attacks.additive as additive
import unlearnable.attacks.ar as ar
from unlearnable.attacks import ATTACKS
from unlearnable.attacks.additive import MAX_KEY_NUMBERS, classwise_noise, draw_poisoned, draw_streams
from unlearnable.attacks.ar import CROP, ar_coefficients, ar_crop, ar_filters, ar_noise, ar_process
from unlearnable.attacks.lsp import lsp_clusters, lsp_noise, patch_grid
from unlearnable.attacks.ops import corner_colours, ops_search
from unlearnable.app.cli import main
from unlearnable.data import load_saved
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

POISONS = ["ops", "lsp", "ar", "noise"]


def random_set(n: int, shape: tuple[int, int, int] = (3, 16, 16), classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes  # every class present
    return images, labels[torch.randperm(n, generator=g)]


def poison(name: str, images: torch.Tensor, labels: torch.Tensor, classes: int, **params):
    return ATTACKS.get(name)(images, labels, classes, device="cpu", progress=False, **params)


# --- what every poison promises ---------------------------------------------------------------

@pytest.mark.parametrize("name", POISONS)
def test_registered_with_the_common_signature(name):
    params = inspect.signature(ATTACKS[name]).parameters
    assert list(params)[:3] == ["images", "labels", "num_classes"]
    assert {"seed", "mix", "device", "progress"} <= set(params)
    assert params["seed"].default == 0 and params["mix"].default == 1.0


@pytest.mark.parametrize("name", POISONS)
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 20)])
def test_key_mask_and_untouched_images(name, shape):
    images, labels = random_set(120, shape)
    p = poison(name, images, labels, 4, mix=0.5, seed=3)
    assert p.images.dtype == torch.uint8 and p.images.shape == images.shape
    key = json.loads(json.dumps(p.key))  # JSON-serialisable as it is
    assert key["attack"] == name and key["seed"] == 3 and key["params"]["mix"] == 0.5
    poisoned = draw_poisoned(3, 120, 0.5)
    assert key["poisoned_indices"] == np.flatnonzero(poisoned).tolist() and 30 < poisoned.sum() < 90
    clean = torch.from_numpy(~poisoned)
    assert torch.equal(p.images[clean], images[clean])
    changed = (p.images != images).flatten(1).any(1)
    # OPS leaves an image alone when it already had the class colour at the class pixel.
    assert changed[~clean].float().mean() > (0.9 if name == "ops" else 0.99)


@pytest.mark.parametrize("name", POISONS)
def test_same_seed_same_bytes_other_seed_other_bytes(name):
    images, labels = random_set(60)
    a = poison(name, images, labels, 4, seed=1, mix=0.8)
    b = poison(name, images, labels, 4, seed=1, mix=0.8)
    c = poison(name, images, labels, 4, seed=2, mix=0.8)
    assert torch.equal(a.images, b.images) and a.key == b.key
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("name", ["lsp", "ar", "noise"])
def test_result_does_not_depend_on_the_chunk_size(name, monkeypatch):
    images, labels = random_set(50)
    whole = poison(name, images, labels, 4, mix=0.7)
    monkeypatch.setattr(additive, "CHUNK_PIXELS", 7 * 3 * 16 * 16)  # chunks of 7 images
    monkeypatch.setattr(ar, "CPU_CHUNK_PIXELS", 7 * 3 * 16 * 16)
    assert torch.equal(poison(name, images, labels, 4, mix=0.7).images, whole.images)


@pytest.mark.parametrize("name,params", [
    ("ops", {"mix": 1.5}), ("ops", {"seed": -1}), ("noise", {"eps": 0.0}), ("noise", {"eps": 1.5}),
    ("lsp", {"eps": -0.1}), ("lsp", {"patch_size": 0}), ("lsp", {"patch_size": 17}), ("ar", {"norm": 0.0}),
    ("ar", {"norm": 100.0}), ("ar", {"min_response": -1.0}), ("ar", {"mix": -0.1}),
])
def test_out_of_range_parameters_are_refused(name, params):
    images, labels = random_set(8)
    with pytest.raises(UserInputError):
        poison(name, images, labels, 4, **params)


@pytest.mark.parametrize("name,shape,classes,label_classes", [
    ("ar", (3, 2, 16), 4, 4), ("lsp", (3, 3, 3), 4, 4), ("ops", (1, 1, 1), 3, 3), ("noise", (3, 16, 16), 3, 4),
])
def test_bad_inputs_are_refused(name, shape, classes, label_classes):
    """Too small for AR / LSP, fewer OPS (pixel, colour) pairs than classes, a label ≥ num_classes."""
    images, labels = random_set(8, shape, classes=label_classes)
    with pytest.raises(UserInputError):
        poison(name, images, labels, classes)


def test_the_mask_is_shared_by_the_additive_poisons():
    images, labels = random_set(80)
    keys = [poison(name, images, labels, 4, mix=0.3, seed=5).key["poisoned_indices"] for name in POISONS]
    assert all(k == keys[0] for k in keys)


# --- OPS --------------------------------------------------------------------------------------

def published_ops_search(images: np.ndarray, labels: np.ndarray, num_classes: int) -> list[tuple[int, int, int]]:
    """The published search, loop for loop: per class, position and colour, mean/std of |v - x|."""
    _, c, h, w = images.shape
    x = images.transpose(0, 2, 3, 1) / 255
    taken, picks = set(), []
    for k in range(num_classes):
        xs = x[labels == k]
        best, best_score = None, -np.inf
        for point in range(h * w):
            for colour, v in enumerate(corner_colours(c)):
                if (point, colour) in taken:
                    continue
                d = np.abs(v - xs[:, point // w, point % w, :])
                score = d.mean() / d.std()
                if score > best_score:
                    best, best_score = (point, colour), score
        taken.add(best)
        picks.append((best[0] // w, best[0] % w, best[1]))
    return picks


@pytest.mark.parametrize("shape", [(3, 6, 5), (1, 7, 7)])
def test_ops_search_equals_the_published_loop(shape):
    images, labels = random_set(40, shape, classes=4, seed=1)
    pixels, colours = ops_search(images, labels, 4)
    index = {tuple(v): i for i, v in enumerate(corner_colours(shape[0]).tolist())}
    ours = [(int(r), int(q), index[tuple(v)]) for (r, q), v in zip(pixels, colours.tolist())]
    assert ours == published_ops_search(images.numpy(), labels.numpy(), 4)


def test_ops_classes_never_share_a_pixel_colour_pair():
    # Identical classes: every class wants the same pair, so each later class must take the next best.
    images = random_set(10, (3, 8, 8))[0].repeat(3, 1, 1, 1)
    labels = torch.arange(3).repeat_interleave(10)
    pixels, colours = ops_search(images, labels, 3)
    pairs = {(int(r), int(q), tuple(v)) for (r, q), v in zip(pixels, colours.tolist())}
    assert len(pairs) == 3
    assert ops_search(images[:10], labels[:10], 1)[0][0].tolist() == pixels[0].tolist()


def test_ops_changes_exactly_one_pixel_to_the_class_colour():
    images, labels = random_set(200, (3, 16, 16), classes=5)
    p = poison("ops", images, labels, 5)
    pixels, colours = np.array(p.key["pixels"]), np.array(p.key["colours"])
    differs = (p.images != images).any(1)  # N×H×W: positions where some channel changed
    assert differs.flatten(1).sum(1).max() == 1
    for i in range(len(images)):
        r, q = pixels[labels[i]]
        assert differs[i].nonzero().tolist() in ([], [[r, q]])
        assert p.images[i, :, r, q].tolist() == (colours[labels[i]] * 255).tolist()


# --- LSP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,patch", [((3, 32, 32), 8), ((1, 28, 28), 7), ((3, 20, 12), 5)])
def test_lsp_noise_norm_and_patches(shape, patch):
    gh, gw = patch_grid(shape[1:], patch)
    centres, maps = lsp_clusters(10, shape[0] * gh * gw, seed=0)
    labels = torch.arange(50) % 10
    noise = lsp_noise(labels, centres, maps, np.random.default_rng(0), shape, patch, eps=6 / 255)
    assert noise.shape == (50, *shape)
    norms = noise.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((50,), np.prod(shape) ** 0.5 * 6 / 255), rtol=1e-5, atol=0)
    # Constant over every p×p patch.
    blocks = noise[:, :, :gh * patch - patch, :gw * patch - patch]
    assert torch.equal(blocks, blocks[:, :, ::patch, ::patch].repeat_interleave(patch, 2).repeat_interleave(patch, 3))


def test_lsp_clusters_are_distinct_vertices_and_linearly_separable():
    centres, maps = lsp_clusters(10, 48, seed=0)
    assert set(np.unique(centres)) == {-10.0, 10.0} and len(np.unique(centres, axis=0)) == 10
    assert maps.shape == (10, 48, 48) and np.abs(maps).max() <= 1
    labels = torch.arange(500) % 10
    noise = lsp_noise(labels, centres, maps, np.random.default_rng(1), (3, 32, 32), 8).flatten(1)
    # A linear classifier (nearest class mean by inner product) separates the perturbations perfectly.
    means = torch.stack([noise[labels == k].mean(0) for k in range(10)])
    scores = noise @ means.T - (means * means).sum(1) / 2
    assert torch.equal(scores.argmax(1), labels)


def test_lsp_regenerates_from_seed_and_truncates():
    images, labels = random_set(30, (3, 16, 16))
    p = poison("lsp", images, labels, 4, seed=4, mix=0.6)
    centres, maps = lsp_clusters(4, 3 * 4 * 4, seed=4)
    np.testing.assert_array_equal(np.array(p.key["centres"]), centres)
    np.testing.assert_array_equal(np.array(p.key["maps"]), maps)
    idx = torch.tensor(p.key["poisoned_indices"])
    delta = lsp_noise(labels[idx], centres, maps, draw_streams(4)[2], (3, 16, 16), 4)
    expected = (images[idx].float() + 255 * delta).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images[idx], expected)


# --- AR ---------------------------------------------------------------------------------------

def published_ar_process(coefficients: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """One image, one conv2d per position, as the published generator."""
    x = field.clone()
    c = x.shape[0]
    for i in range(x.shape[1] - 2):
        for j in range(x.shape[2] - 2):
            x[:, i + 2, j + 2] = F.conv2d(x[:, i:i + 3, j:j + 3], coefficients.unsqueeze(1), groups=c).flatten()
    return x


def test_ar_coefficients_are_causal_sum_to_one_and_are_seeded():
    a = ar_coefficients(4, 3, seed=0)
    assert a.shape == (4, 3, 3, 3) and (a[:, :, 2, 2] == 0).all()
    np.testing.assert_allclose(a.sum((2, 3)), 1.0, atol=1e-12)
    assert len(np.unique(a.reshape(4, -1), axis=0)) == 4
    np.testing.assert_array_equal(a, ar_coefficients.__wrapped__(4, 3, 0))  # the cache returns the same search
    assert not np.array_equal(a, ar_coefficients(4, 3, seed=1))
    assert ar_coefficients(4, 1, seed=0).shape == (4, 1, 3, 3)
    # The optional published greedy criterion rejects some candidates the bound alone accepts.
    greedy = ar_coefficients(4, 3, seed=0, min_response=4.0)
    np.testing.assert_allclose(greedy.sum((2, 3)), 1.0, atol=1e-12)
    assert not np.array_equal(greedy, a)


def test_ar_process_equals_the_published_loop_and_its_own_filter_predicts_it():
    coefficients = torch.from_numpy(ar_coefficients(4, 3, seed=0).copy())
    field = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = ar_process(coefficients, field)
    for k in range(4):
        assert torch.allclose(ours[k], published_ar_process(coefficients[k], field[k]), rtol=1e-9, atol=1e-12)
    # The prediction error of class k's filter vanishes on class k's process, not on the others'.
    errors = F.conv2d(ours, ar_filters(coefficients)).abs().sum((2, 3))  # (image, filter)
    assert errors.diagonal().max() < 1e-9 and (errors + torch.eye(4)).min() > 1e-3


def test_ar_rescale_keeps_float32_finite_and_only_scales():
    growth = torch.zeros(1, 3, 3)
    growth[:, 2, 1] = 2.5  # x[r, q] = 2.5·x[r, q - 1]: grows 2.5^98 ≈ 1e39 along a 100-wide row
    field = torch.randn(2, 1, 8, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = ar_process(growth.double(), field)
    assert not torch.isfinite(ar_process(growth, field.float())).all()
    rescaled = ar_process(growth, field.float(), rescale=True)
    assert torch.isfinite(rescaled).all()
    unit = lambda x: x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # noqa: E731
    assert (unit(rescaled).double() - unit(exact)).abs().max() < 1e-5


def test_ar_noise_norm_and_poison_regenerates():
    coefficients = torch.from_numpy(ar_coefficients(4, 3, seed=2).copy()).float()
    field = torch.randn(6, 3, 16 + CROP, 16 + CROP, generator=torch.Generator().manual_seed(1))
    noise = ar_noise(coefficients[torch.arange(6) % 4], field, norm=0.5)
    assert noise.shape == (6, 3, 16, 16)
    assert torch.allclose(noise.flatten(1).norm(dim=1), torch.full((6,), 0.5), rtol=1e-5, atol=0)
    images, labels = random_set(30)
    p = poison("ar", images, labels, 4, seed=2, mix=0.6)
    np.testing.assert_array_equal(np.array(p.key["coefficients"]), ar_coefficients(4, 3, seed=2))
    idx = torch.tensor(p.key["poisoned_indices"])
    field = draw_streams(2)[2].standard_normal((len(idx), 3, 16 + CROP, 16 + CROP), dtype=np.float32)
    delta = ar_noise(coefficients[labels[idx]], torch.from_numpy(field))
    expected = (images[idx].float() + 255 * delta + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images[idx], expected)


def test_ar_crop_is_the_published_one_per_image_size():
    """CIFAR and STL-10 start the process 4 larger and crop 4 (36 → 32, 100 → 96); ImageNet-100
    starts from 226² and crops 2."""
    assert [ar_crop(s, s) for s in (32, 96, 223, 224, 256)] == [4, 4, 4, 2, 2]
    images = torch.zeros(2, 3, 224, 224, dtype=torch.uint8) + 128
    labels = torch.tensor([0, 1])
    p = poison("ar", images, labels, 2, seed=3)
    assert p.key["params"]["crop"] == 2
    coefficients = torch.from_numpy(ar_coefficients(2, 3, seed=3).copy()).float()
    field = draw_streams(3)[2].standard_normal((2, 3, 226, 226), dtype=np.float32)
    delta = ar_noise(coefficients[labels], torch.from_numpy(field), crop=2)
    expected = (images.float() + 255 * delta + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images, expected)


# --- class-wise noise ---------------------------------------------------------------------------

def test_noise_adds_the_class_pattern_and_rounds():
    images, labels = random_set(40)
    p = poison("noise", images, labels, 4, eps=4 / 255, seed=7)
    patterns = classwise_noise(4, (3, 16, 16), 4 / 255, seed=7)
    np.testing.assert_array_equal(np.array(p.key["patterns"], dtype=np.float32), patterns)
    assert np.abs(patterns).max() <= 4 / 255
    expected = (images.float() + 255 * torch.from_numpy(patterns)[labels] + 0.5).clamp(0, 255).floor()
    assert torch.equal(p.images, expected.to(torch.uint8))
    assert (p.images.int() - images.int()).abs().max() <= 4


def test_large_secrets_are_left_out_of_the_key_and_regenerable():
    images, labels = random_set(4, (3, 64, 64))
    p = poison("noise", images, labels, 10)  # 10·3·64·64 numbers > MAX_KEY_NUMBERS
    assert 10 * 3 * 64 * 64 > MAX_KEY_NUMBERS
    assert "patterns" not in p.key and p.key["regenerate"]["secrets"] == ["patterns"]
    assert "classwise_noise" in p.key["regenerate"]["function"]
    regenerated = torch.from_numpy(classwise_noise(10, (3, 64, 64), 8 / 255, seed=0))
    expected = (images.float() + 255 * regenerated[labels] + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images, expected)


# --- command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,secret", [("ops", "pixels"), ("lsp", "centres"), ("ar", "coefficients"),
                                         ("noise", "patterns")])
def test_cli_poison_and_show(tiny_folder, tmp_path, name, secret):
    out = tmp_path / name
    assert main(["poison", "--data", str(tiny_folder), "--attack", name, "--mix", "0.8", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["attack"] == name and secret in meta and meta["params"]["mix"] == 0.8
    saved = load_saved(out)
    assert saved.images.shape == (24, 3, 16, 16)
    assert main(["show", str(out)]) == 0 and (out.parent / f"{out.name}-samples.png").stat().st_size > 0


def test_cli_passes_the_options_the_attack_takes(tiny_folder, tmp_path):
    out = tmp_path / "lsp"
    assert main(["poison", "--data", str(tiny_folder), "--attack", "lsp", "--eps", "0.05", "--patch-size", "2",
                 "--seed", "9", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["eps"] == 0.05 and meta["params"]["patch_size"] == 2 and meta["seed"] == 9
    assert np.array(meta["centres"]).shape == (3, 3 * 8 * 8)


@pytest.mark.parametrize("attack,option", [("ops", ["--eps", "0.1"]), ("cuda", ["--norm", "1"]),
                                           ("noise", ["--patch-size", "4"]), ("ar", ["--kernel-size", "3"]),
                                           ("lsp", ["--grayscale"])])
def test_cli_refuses_an_option_the_attack_does_not_take(tiny_folder, tmp_path, capsys, attack, option):
    code = main(["poison", "--data", str(tiny_folder), "--attack", attack, *option, "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and option[0] in err and "does not apply" in err
    assert not (tmp_path / "p").exists()


def test_cli_attack_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["poison", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in ATTACKS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", POISONS)
def test_gpu_path_matches_cpu(name):
    images, labels = random_set(300)
    cpu = poison(name, images, labels, 4, mix=0.9)
    gpu = ATTACKS.get(name)(images, labels, 4, mix=0.9, device="cuda", progress=False)
    assert gpu.key == cpu.key
    diff = (gpu.images.int() - cpu.images.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.999
