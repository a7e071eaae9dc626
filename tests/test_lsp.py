"""LSP, linearly separable patches (attacks/lsp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.attacks.additive import draw_streams
from unlearnable.attacks.lsp import lsp_clusters, lsp_noise, patch_grid

pytestmark = pytest.mark.usefixtures("one_thread")


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
    blocks = noise[:, :, : gh * patch - patch, : gw * patch - patch]
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


def test_lsp_regenerates_from_seed_and_truncates(random_set, poison):
    images, labels = random_set(30, (3, 16, 16))
    p = poison("lsp", images, labels, 4, seed=4, mix=0.6)
    centres, maps = lsp_clusters(4, 3 * 4 * 4, seed=4)
    np.testing.assert_array_equal(np.array(p.key["centres"]), centres)
    np.testing.assert_array_equal(np.array(p.key["maps"]), maps)
    idx = torch.tensor(p.key["poisoned_indices"])
    delta = lsp_noise(labels[idx], centres, maps, draw_streams(4)[2], (3, 16, 16), 4)
    expected = (images[idx].float() + 255 * delta).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images[idx], expected)
