"""The attack registry and what every model-free poison (OPS, LSP, AR, class-wise noise) promises:
the common signature, keys, masks, seeds, chunking, checks and the GPU path."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

import unlearnable.attacks.additive as additive
import unlearnable.attacks.ar as ar
from unlearnable.attacks import ATTACKS
from unlearnable.attacks.additive import draw_poisoned
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


POISONS = ["ops", "lsp", "ar", "noise"]


@pytest.mark.parametrize("name", POISONS)
def test_registered_with_the_common_signature(name):
    params = inspect.signature(ATTACKS[name]).parameters
    assert list(params)[:3] == ["images", "labels", "num_classes"]
    assert {"seed", "mix", "device", "progress"} <= set(params)
    assert params["seed"].default == 0 and params["mix"].default == 1.0


@pytest.mark.parametrize("name", POISONS)
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 20)])
def test_key_mask_and_untouched_images(random_set, poison, name, shape):
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
def test_same_seed_same_bytes_other_seed_other_bytes(random_set, poison, name):
    images, labels = random_set(60)
    a = poison(name, images, labels, 4, seed=1, mix=0.8)
    b = poison(name, images, labels, 4, seed=1, mix=0.8)
    c = poison(name, images, labels, 4, seed=2, mix=0.8)
    assert torch.equal(a.images, b.images) and a.key == b.key
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("name", ["lsp", "ar", "noise"])
def test_result_does_not_depend_on_the_chunk_size(random_set, poison, name, monkeypatch):
    images, labels = random_set(50)
    whole = poison(name, images, labels, 4, mix=0.7)
    monkeypatch.setattr(additive, "CHUNK_PIXELS", 7 * 3 * 16 * 16)  # chunks of 7 images
    monkeypatch.setattr(ar, "CPU_CHUNK_PIXELS", 7 * 3 * 16 * 16)
    assert torch.equal(poison(name, images, labels, 4, mix=0.7).images, whole.images)


@pytest.mark.parametrize(
    "name,params",
    [
        ("ops", {"mix": 1.5}),
        ("ops", {"seed": -1}),
        ("noise", {"eps": 0.0}),
        ("noise", {"eps": 1.5}),
        ("lsp", {"eps": -0.1}),
        ("lsp", {"patch_size": 0}),
        ("lsp", {"patch_size": 17}),
        ("ar", {"norm": 0.0}),
        ("ar", {"norm": 100.0}),
        ("ar", {"min_response": -1.0}),
        ("ar", {"mix": -0.1}),
    ],
)
def test_out_of_range_parameters_are_refused(random_set, poison, name, params):
    images, labels = random_set(8)
    with pytest.raises(UserInputError):
        poison(name, images, labels, 4, **params)


@pytest.mark.parametrize("name", ["cuda", "ops", "noise"])
def test_seed_and_mix_are_checked_declaratively(random_set, poison, name):
    images, labels = random_set(8)
    with pytest.raises(UserInputError, match=rf"^{name}: seed must be an integer in \[0, 4294967295\] \(got -1\)$"):
        poison(name, images, labels, 4, seed=-1)
    with pytest.raises(UserInputError, match=rf"^{name}: mix must be a number in \[0, 1\] \(got 1.5\)$"):
        poison(name, images, labels, 4, mix=1.5)


@pytest.mark.parametrize(
    "name,shape,classes,label_classes",
    [
        ("ar", (3, 2, 16), 4, 4),
        ("lsp", (3, 3, 3), 4, 4),
        ("ops", (1, 1, 1), 3, 3),
        ("noise", (3, 16, 16), 3, 4),
    ],
)
def test_bad_inputs_are_refused(random_set, poison, name, shape, classes, label_classes):
    """Too small for AR / LSP, fewer OPS (pixel, colour) pairs than classes, a label ≥ num_classes."""
    images, labels = random_set(8, shape, classes=label_classes)
    with pytest.raises(UserInputError):
        poison(name, images, labels, classes)


def test_the_mask_is_shared_by_the_additive_poisons(random_set, poison):
    images, labels = random_set(80)
    keys = [poison(name, images, labels, 4, mix=0.3, seed=5).key["poisoned_indices"] for name in POISONS]
    assert all(k == keys[0] for k in keys)


@pytest.mark.cuda
@pytest.mark.parametrize("name", POISONS)
def test_gpu_path_matches_cpu(random_set, poison, name):
    images, labels = random_set(300)
    cpu = poison(name, images, labels, 4, mix=0.9)
    gpu = ATTACKS.get(name)(images, labels, 4, mix=0.9, device="cuda", progress=False)
    assert gpu.key == cpu.key
    diff = (gpu.images.int() - cpu.images.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.999
