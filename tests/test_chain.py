"""Chains of defenses (defenses/chain.py): building image chains, routing every stage of a
training chain, options and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import AfterCropDummy, seeded_generator
from unlearnable.defenses import (
    DEFENSES,
    Compose,
    CutMix,
    DeconvolutionAT,
    FrequencyFilter,
    Identity,
    MixUp,
    RandomSharpen,
    StaticSharpen,
    UEraserMax,
    build_defense,
    defense_kinds,
    training_defense,
)
from unlearnable.defenses.adversarial import AdversarialTraining
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


# --- image chains ------------------------------------------------------------------------------


def test_build_defense_composes_in_order(rand_images):
    defense = build_defense("RSK + ff", center=3.0, keep_percent=50, std=None)
    assert isinstance(defense, Compose)
    rsk, ff = defense.defenses
    assert isinstance(rsk, RandomSharpen) and rsk.center == 3.0 and isinstance(ff, FrequencyFilter)
    assert ff.keep_percent == 50 and "RandomSharpen(center=3.0" in repr(defense)
    x = rand_images((2, 3, 32, 32))
    expected = ff(rsk(x, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(defense(x, torch.Generator().manual_seed(0)), expected)


def test_build_defense_single_names_and_none(rand_images):
    assert DEFENSES.names()[:3] == ("rsk", "ssk", "ff")
    assert isinstance(build_defense("ssk", center=2.0, padding="reflect"), StaticSharpen)
    x = rand_images((1, 3, 8, 8))
    none = build_defense("none")
    assert isinstance(none, Identity) and none(x) is x


@pytest.mark.parametrize(
    "spec, options, mentions",
    [
        ("blur", {}, "'blur'"),
        ("rsk+", {}, "rsk, ssk, ff"),
        ("ff", {"center": 2.0}, "center=2.0"),
        ("none", {"std": 0.1}, "std=0.1"),
        ("rsk", {"center": float("inf")}, "RandomSharpen: center must be a finite number (got inf)"),
        ("rsk", {"center": "2.5"}, "RandomSharpen: center must be a finite number (got '2.5')"),
        ("rsk", {"std": -0.1}, "RandomSharpen: std must be a number ≥ 0 (got -0.1)"),
        (
            "ssk",
            {"padding": "same"},
            "StaticSharpen: padding must be one of 'valid', 'replicate', 'reflect', 'zeros' (got 'same')",
        ),
        ("ff", {"keep_percent": 0}, "FrequencyFilter: keep_percent must be a number in (0, 100] (got 0)"),
        ("ff", {"keep_percent": 101}, "keep_percent must be a number in (0, 100] (got 101)"),
        ("ff", {"imagenet_variant": "yes"}, "FrequencyFilter: imagenet_variant must be True or False (got 'yes')"),
    ],
)
def test_build_defense_rejects_bad_input(spec, options, mentions):
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        build_defense(spec, **options)
    assert mentions in str(info.value)


def test_coin_iss_and_cutout_are_registered_with_their_stage():
    assert DEFENSES.names(stage="after-crop") == ("coin", "cutout")
    assert {"jpeg", "gray", "bdr"} <= set(DEFENSES.names(stage="before-crop"))


def test_chains_route_options_and_apply_in_order():
    defense = build_defense("rsk+ff+coin", alpha=1.0, keep_percent=40)
    assert isinstance(defense, Compose)
    rsk, ff, coin = defense.defenses
    assert ff.keep_percent == 40 and coin.alpha == 1.0
    x = torch.rand((3, 3, 32, 32), generator=seeded_generator(25))
    g = seeded_generator(26)
    expected = coin(ff(rsk(x, g)), g)
    torch.testing.assert_close(defense(x, seeded_generator(26)), expected, atol=0, rtol=0)
    assert expected.shape == (3, 3, 30, 30)

    iss = build_defense("gray+bdr+jpeg+cutout", bits=3, quality=30, size=8)
    assert repr(iss) == "Compose([Grayscale(), BitDepthReduction(bits=3), JpegCompression(quality=30), Cutout(size=8)])"
    out = iss(x, seeded_generator(27))
    assert out.shape == x.shape and torch.equal(out[:, 0], out[:, 1])
    assert build_defense("coin", severity=2).alpha == 1.2


@pytest.mark.parametrize(
    "spec, options, mentions",
    [
        ("coin", {"alpha": -1}, "Coin: alpha must be None or a number ≥ 0 (got -1)"),
        ("coin", {"alpha": float("nan")}, "alpha must be None or a number ≥ 0 (got nan)"),
        ("coin", {"alpha": "big"}, "alpha must be None or a number ≥ 0 (got 'big')"),
        ("coin", {"alpha": 1.0, "severity": 4}, "both given"),
        ("coin", {"severity": 8}, "Coin: severity must be None or an integer in [1, 7] (got 8)"),
        ("coin", {"severity": 2.5}, "severity must be None or an integer in [1, 7] (got 2.5)"),
        ("coin", {"published_quirks": "yes"}, "Coin: published_quirks must be True or False (got 'yes')"),
        ("jpeg", {"quality": 0}, "JpegCompression: quality must be an integer in [1, 100] (got 0)"),
        ("jpeg", {"quality": 101}, "quality must be an integer in [1, 100] (got 101)"),
        ("jpeg", {"quality": 10.5}, "quality must be an integer in [1, 100] (got 10.5)"),
        ("bdr", {"bits": 0}, "BitDepthReduction: bits must be an integer in [1, 8] (got 0)"),
        ("bdr", {"bits": 9}, "bits must be an integer in [1, 8] (got 9)"),
        ("cutout", {"size": 0}, "Cutout: size must be an integer ≥ 1 (got 0)"),
        ("cutout", {"size": 8.0}, "Cutout: size must be an integer ≥ 1 (got 8.0)"),
        ("gray", {"quality": 10}, "quality=10"),
        ("jpeg+bdr", {"size": 4}, "size=4"),
    ],
)
def test_build_defense_rejects_bad_coin_iss_and_cutout_options(spec, options, mentions):
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        build_defense(spec, **options)
    assert mentions in str(info.value)


# --- training chains: kinds, options, errors ------------------------------------------------------


def test_training_defense_routes_each_kind(register) -> None:
    register(DEFENSES, "dummy", AfterCropDummy, stage="after-crop")
    chain = training_defense("dummy+rsk+cutmix+ff+at-linf", keep_percent=50, mix_alpha=0.5, eps=8 / 255)
    assert isinstance(chain.before_crop, Compose) and [type(d).__name__ for d in chain.before_crop.defenses] == [
        "RandomSharpen",
        "FrequencyFilter",
    ]
    assert chain.before_crop.defenses[1].keep_percent == 50
    assert isinstance(chain.after_crop, AfterCropDummy)
    assert isinstance(chain.mix, CutMix) and chain.mix.mix_alpha == 0.5
    assert chain.hook == AdversarialTraining("linf", 8 / 255, 10)
    assert "mix=CutMix(mix_alpha=0.5)" in repr(chain) and "after_crop=AfterCropDummy()" in repr(chain)
    assert defense_kinds()["after crop/flip"][-1] == "dummy" and "dummy" not in defense_kinds()["before crop/flip"]
    none = training_defense("none")
    assert isinstance(none.before_crop, Identity) and isinstance(none.after_crop, Identity)
    assert none.mix is None and none.hook is None
    assert isinstance(training_defense("MixUp").mix, MixUp)
    dat = training_defense("dat", filter_size=3, steps=4).hook
    assert isinstance(dat, DeconvolutionAT) and (dat.filter_size, dat.steps, dat.step_size) == (3, 4, 0.1)
    assert isinstance(training_defense("ueraser").hook, UEraserMax) and training_defense("ueraser").hook.draws == 5


@pytest.mark.parametrize(
    "spec, options, mentions",
    [
        ("mixup+cutmix", {}, "keep at most one"),
        ("dat+at-l2", {}, "keep at most one"),
        ("rsk+blur", {}, "ueraser"),
        ("rsk", {"eps": 0.1}, "eps=0.1"),
        ("mixup", {"mix_alpha": 0}, "MixUp: mix_alpha must be a number > 0 (got 0)"),
        ("dat", {"filter_size": 4}, "DeconvolutionAT: filter_size must be an odd integer ≥ 1 (got 4)"),
        ("dat", {"steps": -1}, "DeconvolutionAT: steps must be an integer ≥ 0 (got -1)"),
        ("ueraser", {"draws": 0}, "UEraserMax: draws must be an integer ≥ 1 (got 0)"),
        ("at-linf", {"eps": -1.0}, "AdversarialTraining: eps must be a number > 0 (got -1.0)"),
    ],
)
def test_training_defense_rejects_bad_input(spec: str, options: dict, mentions: str) -> None:
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        training_defense(spec, **options)
    assert mentions in str(info.value)


def test_unknown_names_list_every_kind_and_build_defense_refuses_training_only_names() -> None:
    with pytest.raises(UserInputError) as info:
        build_defense("blur")
    message = str(info.value)
    assert "\n" not in message
    for names in defense_kinds().values():
        assert all(name in message for name in names)
    for name in (*DEFENSES.names(stage="mixing"), *DEFENSES.names(stage="hook")):
        with pytest.raises(UserInputError, match="only in training"):
            build_defense(f"rsk+{name}")


def test_adversarial_training_is_a_hook_in_the_chain(tmp_path: Path) -> None:
    chain = training_defense("rsk+cutmix+at-linf", eps=8 / 255)  # mixing + PGD is fine
    assert isinstance(chain.mix, CutMix) and isinstance(chain.hook, AdversarialTraining) and chain.hook.eps == 8 / 255
    with pytest.raises(UserInputError, match="keep at most one"):
        training_defense("rsk+dat+at-linf")
