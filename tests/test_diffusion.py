"""The diffpure defense: schedule, UNet, training, samplers, checkpoints, the preprocessing defense."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.data import ImageDataset
from unlearnable.defenses import DEFENSES, training_defense
from unlearnable.defenses.diffusion import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    DDPMConfig,
    DiffusionPurification,
    UNet,
    alphas_cumprod,
    build_model,
    from_model_scale,
    linear_betas,
    load_checkpoint,
    purify,
    reverse_timesteps,
    save_checkpoint,
    timestep_embedding,
    to_model_scale,
    train_ddpm,
)
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = DDPMConfig(
    image_size=8, width=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), dropout=0.0
)
TRAIN = {"steps": 80, "batch_size": 32, "lr": 2e-3, "warmup": 0, "seed": 0}
SOURCE = {"spec": "clean-test", "kind": "imagefolder", "split": "test", "path": "/data/clean.tar.gz"}


def blocky_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 n×3×8×8 images of 2×2 blocks of random colour: structure a tiny DDPM learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    return (F.interpolate(torch.rand(n, 3, 2, 2, generator=g), size=8, mode="nearest") * 255).to(torch.uint8)


def dataset(images: torch.Tensor, source: dict | None = None) -> ImageDataset:
    labels = torch.arange(len(images)) % 4
    meta = {"attack": "synthetic", **({"source": source} if source else {})}
    return ImageDataset(images, labels, [f"c{c}" for c in range(4)], meta)


@pytest.fixture(scope="module")
def trained() -> tuple[UNet, list[float]]:
    return train_ddpm(blocky_images(), TINY, **TRAIN)


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "tiny"
    return save_checkpoint(out, trained[0], {"source": SOURCE, "images": 64})


class GaussianOracle(nn.Module):
    """The exact ε-predictor for data x0 ~ N(mean, σ²) per pixel: E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ·mean)/(ᾱσ² + 1 − ᾱ)."""

    def __init__(self, config: DDPMConfig, mean: float, sigma: float) -> None:
        super().__init__()
        self.config, self.mean, self.sigma = config, mean, sigma
        self.register_buffer("abar", alphas_cumprod(config).float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t][:, None, None, None]
        return (1 - a).sqrt() * (x - a.sqrt() * self.mean) / (a * self.sigma**2 + 1 - a)


def gaussian_images(mean: float, sigma: float, n: int = 512) -> torch.Tensor:
    return from_model_scale(mean + sigma * torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(5)))


def test_linear_schedule_is_ddpm_and_avatars_vpsde():
    config = DDPMConfig()
    betas = linear_betas(config)
    assert betas.shape == (1000,) and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    # AVATAR/DiffPure's VP-SDE (β_min 0.1, β_max 20, N 1000) has these discrete betas ...
    assert torch.allclose(betas, torch.linspace(0.1 / 1000, 20 / 1000, 1000, dtype=torch.float64))
    # ... and at t* = 0.1 (100 of 1000 steps) ᾱ matches its continuous exp(−½(β_max − β_min)t² − β_min·t).
    continuous = math.exp(-0.5 * (20 - 0.1) * 0.1**2 - 0.1 * 0.1)
    assert float(alphas_cumprod(config)[99]) == pytest.approx(continuous, abs=1e-3)


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 7]), 9)
    assert e.shape == (2, 9)
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 5))  # cos 0, sin 0, the odd pad
    assert e[1, 0] == pytest.approx(math.cos(7)) and e[1, 4] == pytest.approx(math.sin(7))


def test_unet_shapes_and_identity_start():
    for config in (TINY, DDPMConfig(image_size=16, channels=1, width=8, channel_mult=(1, 2, 1), num_res_blocks=2)):
        model = build_model(config).eval()
        x = torch.randn(3, config.channels, config.image_size, config.image_size)
        out = model(x, torch.tensor([0, 5, 999]))
        assert out.shape == x.shape
        # The head is zero-initialised: an untrained network predicts ε̂ = 0.
        assert torch.equal(out, torch.zeros_like(out))
    wider = build_model(DDPMConfig(image_size=8, width=32, channel_mult=(1, 2), num_res_blocks=2))
    assert sum(p.numel() for p in wider.parameters()) > 4 * sum(p.numel() for p in build_model(TINY).parameters())


def test_config_round_trip_and_checks():
    assert DDPMConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(UserInputError, match="image_size must be divisible by 4"):
        DDPMConfig(image_size=10, channel_mult=(1, 2, 2))
    with pytest.raises(UserInputError, match=r"DDPMConfig: width must be an integer ≥ 1 \(got 0\)"):
        DDPMConfig(width=0)
    with pytest.raises(UserInputError, match="channel_mult must be a non-empty list"):
        DDPMConfig(channel_mult=())
    with pytest.raises(UserInputError, match="unknown field 'depth'"):
        DDPMConfig.from_dict({**TINY.to_dict(), "depth": 3})


def test_reverse_timesteps():
    assert reverse_timesteps(100, 5) == [99, 74, 50, 25, 0]
    assert reverse_timesteps(10, 100) == list(range(9, -1, -1))
    assert reverse_timesteps(7, 1) == [6]
    for chain, steps in ((100, 7), (13, 12), (1000, 999)):
        visits = reverse_timesteps(chain, steps)
        assert len(set(visits)) == steps and visits[0] == chain - 1 and visits[-1] == 0
        assert visits == sorted(visits, reverse=True)


def test_training_learns_and_is_deterministic(trained):
    model, losses = trained
    assert len(losses) == TRAIN["steps"]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    again, same_losses = train_ddpm(blocky_images(), TINY, **TRAIN)
    assert same_losses == losses
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other, _ = train_ddpm(blocky_images(), TINY, **{**TRAIN, "steps": 2, "seed": 1})
    assert not torch.equal(other.head[-1].weight, model.head[-1].weight)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_training_refuses_bad_input():
    with pytest.raises(UserInputError, match="built for 3×8×8"):
        train_ddpm(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), TINY, steps=1)
    with pytest.raises(UserInputError, match=r"train_ddpm: steps must be an integer ≥ 1 \(got 0\)"):
        train_ddpm(blocky_images(4), TINY, steps=0)


@pytest.mark.parametrize(("sampler", "steps", "tolerance"), [("ddpm", 1000, 0.015), ("ddim", 100, 0.02)])
def test_samplers_recover_a_gaussian_from_noise(sampler, steps, tolerance):
    """With the exact ε of N(mean, σ²) data, sampling from pure noise (t* = 1) gives that distribution back."""
    oracle = GaussianOracle(DDPMConfig(image_size=8, width=8, channel_mult=(1,)), mean=0.2, sigma=0.25)
    out = to_model_scale(purify(oracle, gaussian_images(-0.5, 0.05), 1.0, steps, sampler))  # type: ignore[arg-type]
    assert float(out.mean()) == pytest.approx(0.2, abs=0.01)
    assert float(out.std()) == pytest.approx(0.25, abs=tolerance)


def test_one_step_lands_on_the_predicted_x0():
    """Stepping to ᾱ = 1 leaves no posterior variance: DDPM and DDIM both return the clipped x̂0."""
    oracle = GaussianOracle(DDPMConfig(image_size=8, width=8, channel_mult=(1,)), mean=0.2, sigma=0.25)
    images = gaussian_images(0.6, 0.3)
    ddpm, ddim = (purify(oracle, images, 0.2, 1, sampler, seed=7) for sampler in ("ddpm", "ddim"))  # type: ignore[arg-type]
    assert torch.equal(ddpm, ddim)
    abar = float(alphas_cumprod(oracle.config)[199])
    x0 = to_model_scale(images)
    x = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    shrink = abar * 0.25**2 / (abar * 0.25**2 + 1 - abar)  # E[x0 | x_t] for Gaussian data
    expected = from_model_scale((0.2 + shrink * (x / math.sqrt(abar) - 0.2)).clamp(-1, 1))
    assert (ddpm.int() - expected.int()).abs().max() <= 1


def test_larger_t_star_moves_images_further():
    oracle = GaussianOracle(DDPMConfig(image_size=8, width=8, channel_mult=(1,)), mean=0.2, sigma=0.25)
    images = gaussian_images(0.2, 0.25)
    distances = [
        float((purify(oracle, images, t, 100).float() - images.float()).abs().mean())  # type: ignore[arg-type]
        for t in (0.0, 0.01, 0.05, 0.1, 0.3)
    ]
    assert distances[0] == 0
    assert distances == sorted(distances) and len(set(distances)) == len(distances)


def test_purify_with_a_trained_model(trained):
    model, _ = trained
    images = blocky_images(32, seed=1)
    assert torch.equal(purify(model, images, 0.0), images)
    out = purify(model, images, 0.1, sample_steps=4, seed=3)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, purify(model, images, 0.1, sample_steps=4, seed=3))
    assert not torch.equal(out, purify(model, images, 0.1, sample_steps=4, seed=4))
    # The reverse process denoises: the result is closer to the input than the noised image at t*.
    abar = float(alphas_cumprod(TINY)[99])
    x0 = to_model_scale(images)
    noised = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(3)
    )
    assert (out.float() - images.float()).abs().mean() < (
        from_model_scale(noised).float() - images.float()
    ).abs().mean()
    small, large = (float((purify(model, images, t, 4).float() - images.float()).abs().mean()) for t in (0.02, 0.3))
    assert small < large
    ddim = purify(model, images, 0.1, sample_steps=4, sampler="ddim")
    assert ddim.shape == images.shape and not torch.equal(ddim, out)
    assert torch.equal(
        purify(model, images, 0.1, sample_steps=4, batch_size=5),
        purify(model, images, 0.1, sample_steps=4, batch_size=5),
    )


@pytest.mark.parametrize("name", ["tiny", "tiny.pt"])
def test_checkpoint_round_trip(trained, tmp_path, name):
    model, _ = trained
    out = save_checkpoint(tmp_path / name, model, {"source": SOURCE, "images": 64, "indices": [1, 2]})
    loaded, meta = load_checkpoint(out)
    assert meta["model"] == TINY.to_dict() and meta["training"]["indices"] == [1, 2]
    assert loaded.config == TINY
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    images = blocky_images(8)
    assert torch.equal(purify(loaded, images, 0.1, 3), purify(model, images, 0.1, 3))
    with pytest.raises(UserInputError, match="already exists"):
        save_checkpoint(out, model, {})
    save_checkpoint(out, model, {"images": 1}, overwrite=True)
    assert load_checkpoint(out)[1]["training"] == {"images": 1}


def test_bad_checkpoints_name_the_fix(trained, tmp_path):
    with pytest.raises(UserInputError, match="pass checkpoint=PATH.*train_diffusion.py"):
        load_checkpoint(None)
    with pytest.raises(UserInputError, match="no such DDPM checkpoint; train one with python bench/train_diffusion.py"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="needs config.json and model.pt"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="unreadable DDPM checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    out = save_checkpoint(tmp_path / "ckpt", trained[0], {})
    config = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**config, "model": {**config["model"], "width": 8}}))
    with pytest.raises(UserInputError, match="the weights do not fit the config"):
        load_checkpoint(out)
    (out / CONFIG_FILE).write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(UserInputError, match="is not a unlearnable-ddpm checkpoint"):
        load_checkpoint(out)
    (out / CONFIG_FILE).write_text(json.dumps(config))
    torch.save({"weights": torch.nn.Linear(2, 2)}, out / WEIGHTS_FILE)  # a pickled module: weights_only refuses it
    with pytest.raises(UserInputError, match="unreadable DDPM checkpoint"):
        load_checkpoint(out)


def test_defense_purifies_a_dataset(checkpoint):
    source = dataset(blocky_images(24, seed=2), {**SOURCE, "split": "train"})
    defense = DiffusionPurification(checkpoint=checkpoint, t_star=0.1, sample_steps=3, seed=1, batch_size=10)
    out = defense(source)
    assert torch.equal(out.labels, source.labels) and out.classes == source.classes
    assert out.images.dtype == torch.uint8 and out.images.shape == source.images.shape
    assert not torch.equal(out.images, source.images)
    assert torch.equal(out.images, defense(source).images)
    record = out.meta["diffpure"]
    assert out.meta["attack"] == "synthetic" and out.meta["source"] == source.meta["source"]
    assert record["chain_steps"] == 100 and record["sample_steps"] == 3 and record["t_star"] == 0.1
    assert record["model"] == TINY.to_dict() and record["training"]["images"] == 64
    assert json.loads(json.dumps(record)) == record
    assert repr(defense) == (
        f"DiffusionPurification(checkpoint={str(checkpoint)!r}, t_star=0.1, sample_steps=3, sampler='ddpm', seed=1, batch_size=10)"
    )


def test_defense_checks(checkpoint):
    with pytest.raises(UserInputError, match="pass checkpoint=PATH"):
        DiffusionPurification()(dataset(blocky_images(4)))
    with pytest.raises(UserInputError, match=r"are 3×16×16 \(C×H×W\) but the DDPM was built for 3×8×8"):
        DiffusionPurification(checkpoint=checkpoint)(dataset(torch.zeros(4, 3, 16, 16, dtype=torch.uint8)))
    with pytest.raises(UserInputError, match=r"DiffusionPurification: t_star must be a number in \[0, 1\] \(got 1.5\)"):
        DiffusionPurification(t_star=1.5)
    with pytest.raises(UserInputError, match="sampler must be one of 'ddpm', 'ddim'"):
        DiffusionPurification(sampler="euler")
    with pytest.raises(UserInputError, match=r"checkpoint must be a path or None \(got 3\)"):
        DiffusionPurification(checkpoint=3)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="trained on the very images it purifies"):
        DiffusionPurification(checkpoint=checkpoint, sample_steps=1)(dataset(blocky_images(4), SOURCE))


def test_registered_as_preprocess(checkpoint):
    assert DEFENSES.entry("diffpure").tags["stage"] == "preprocess"
    chain = training_defense("diffpure+rsk", checkpoint=str(checkpoint), t_star=0.05)
    assert isinstance(chain.preprocess, DiffusionPurification)
    assert chain.preprocess.t_star == 0.05 and chain.preprocess.checkpoint == str(checkpoint)
