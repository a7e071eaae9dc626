"""OPS, the one-pixel shortcut (attacks/ops.py), against the published search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.attacks.ops import corner_colours, ops_search

pytestmark = pytest.mark.usefixtures("one_thread")


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
def test_ops_search_equals_the_published_loop(random_set, shape):
    images, labels = random_set(40, shape, classes=4, seed=1)
    pixels, colours = ops_search(images, labels, 4)
    index = {tuple(v): i for i, v in enumerate(corner_colours(shape[0]).tolist())}
    ours = [(int(r), int(q), index[tuple(v)]) for (r, q), v in zip(pixels, colours.tolist())]
    assert ours == published_ops_search(images.numpy(), labels.numpy(), 4)


def test_ops_classes_never_share_a_pixel_colour_pair(random_set):
    # Identical classes: every class wants the same pair, so each later class must take the next best.
    images = random_set(10, (3, 8, 8))[0].repeat(3, 1, 1, 1)
    labels = torch.arange(3).repeat_interleave(10)
    pixels, colours = ops_search(images, labels, 3)
    pairs = {(int(r), int(q), tuple(v)) for (r, q), v in zip(pixels, colours.tolist())}
    assert len(pairs) == 3
    assert ops_search(images[:10], labels[:10], 1)[0][0].tolist() == pixels[0].tolist()


def test_ops_changes_exactly_one_pixel_to_the_class_colour(random_set, poison):
    images, labels = random_set(200, (3, 16, 16), classes=5)
    p = poison("ops", images, labels, 5)
    pixels, colours = np.array(p.key["pixels"]), np.array(p.key["colours"])
    differs = (p.images != images).any(1)  # N×H×W: positions where some channel changed
    assert differs.flatten(1).sum(1).max() == 1
    for i in range(len(images)):
        r, q = pixels[labels[i]]
        assert differs[i].nonzero().tolist() in ([], [[r, q]])
        assert p.images[i, :, r, q].tolist() == (colours[labels[i]] * 255).tolist()
