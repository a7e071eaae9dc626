"""The image defenses' Transform contract (defenses/base.py): per-sample use, torchvision
pipelines, generators, input checks and reprs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.defenses import (
    FrequencyFilter,
    RandomSharpen,
    StaticSharpen,
    build_defense,
    sample_sharpen_kernels,
)
from unlearnable.errors import UserInputError


def test_generator_must_be_a_generator(rand_images):
    with pytest.raises(UserInputError, match="^RandomSharpen: generator must be a torch.Generator or None"):
        RandomSharpen()(rand_images((1, 3, 8, 8)), 0)


IMAGE_SPECS = ("rsk", "ssk", "ff", "coin", "jpeg", "gray", "bdr", "cutout", "rsk+ff", "rsk+ff+coin")


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_one_chw_image_is_a_batch_of_one(rand_images, spec):
    x = rand_images((3, 32, 32), seed=4)
    defense = build_defense(spec)
    out = defense(x, torch.Generator().manual_seed(9))
    assert out.dim() == 3 and out.dtype == torch.float32
    assert torch.equal(out, defense(x[None], torch.Generator().manual_seed(9))[0])


def test_make_params_and_transform_split_the_draws_from_their_use(rand_images):
    x = rand_images((4, 3, 16, 16))
    rsk = RandomSharpen()
    params = rsk.make_params(x, torch.Generator().manual_seed(2))
    assert torch.equal(params["kernels"], sample_sharpen_kernels(4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(rsk.transform(x, params), rsk(x, torch.Generator().manual_seed(2)))
    assert FrequencyFilter().make_params(x, None) == {}


def test_integer_images_are_refused_with_the_fix():
    with pytest.raises(
        UserInputError,
        match=r"^RandomSharpen takes float images in \[0, 1\] \(got torch.uint8\); "
        r"convert with v2.ToDtype\(torch.float32, scale=True\)",
    ):
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


def test_defenses_in_a_torchvision_pipeline_are_seeded_by_torch_manual_seed(rand_images):
    from PIL import Image
    from torchvision.transforms import v2

    photo = Image.fromarray((rand_images((32, 32, 3), seed=6).numpy() * 255).astype(np.uint8))
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
    torch.testing.assert_close(
        torch.stack([FrequencyFilter()(c) for c in crops]), FrequencyFilter()(crops), atol=1e-6, rtol=0
    )


@pytest.mark.cuda
def test_cuda_images_draw_from_the_cuda_generator_and_refuse_a_cpu_one(rand_images):
    x = rand_images((2, 3, 16, 16)).cuda()
    torch.cuda.manual_seed(4)
    out = RandomSharpen()(x)
    assert torch.equal(out, RandomSharpen()(x, torch.Generator("cuda").manual_seed(4)))
    with pytest.raises(UserInputError, match="the generator is on cpu but the images are on cuda"):
        RandomSharpen()(x, torch.Generator().manual_seed(0))
    with pytest.raises(UserInputError, match="the generator is on cuda"):
        RandomSharpen()(x.cpu(), torch.Generator("cuda").manual_seed(0))
