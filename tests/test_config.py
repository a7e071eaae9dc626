"""The training configuration (training/config.py): every value checked, one line each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from helpers import one_line_error
from unlearnable.errors import UserInputError
from unlearnable.training.config import TrainConfig, config_to_dict, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_config_validation(quick_config, tmp_path: Path) -> None:
    for changes, message in [
        ({"device": "tpu"}, "device"),
        ({"defense": "blur"}, "unknown defense"),
        ({"defense": "at-linf", "defense_options": {"epsilon": 1}}, "epsilon"),
        ({"defense": "at-l2", "defense_options": {"steps": 0}}, "steps"),
        ({"normalization": "imagenet21k"}, "normalization"),
        ({"amp": "yes"}, "amp"),
        ({"augment": "rrc"}, "augment"),
        ({"data_placement": "gpu"}, "data_placement"),
        ({"sync_batchnorm": True}, "CUDA"),
    ]:
        with pytest.raises(UserInputError, match=message):
            resolve_config(quick_config(tmp_path, **changes))
    with pytest.raises(TypeError, match="adversarial"):  # adversarial training is the chain's at-linf / at-l2
        TrainConfig(out=str(tmp_path), adversarial={"norm": "linf"})  # type: ignore[call-arg]
    resolved = config_to_dict(quick_config(tmp_path, defense="at-l2", defense_options={"eps": 0.5, "steps": 5}))
    assert "adversarial" not in resolved and resolved["defense_options"] == {"eps": 0.5, "steps": 5}
    assert (
        resolved["device"] == "cpu"
        and resolved["channels_last"] is True
        and resolved["amp"] is False
        and resolved["name"] == tmp_path.name
    )


@pytest.mark.parametrize("seed", [-1, 2**32, 2**63, 10**20, 1e20, 1.0, True, "0"])
def test_seed_out_of_range_is_one_line(quick_config, tmp_path: Path, seed) -> None:
    message = one_line_error(lambda: resolve_config(quick_config(tmp_path, seed=seed)))
    assert message == f"seed must be an integer in [0, 4294967295] (got {seed!r})"


def test_other_config_values_are_checked_uniformly(quick_config, tmp_path: Path) -> None:
    for changes, expected in [
        ({"out": ""}, "out must be a run directory (got '')"),
        ({"recipe": 3}, "recipe must be a Recipe or one of paper, cuda-paper, quick (got 3)"),
        ({"amp": "yes"}, "amp must be 'auto' or True or False (got 'yes')"),
        ({"augment": "rrc"}, "augment must be one of 'auto', 'crop', 'resized-crop' (got 'rrc')"),
        ({"defense_options": [1]}, "defense_options must be a dict"),
    ]:
        assert one_line_error(
            lambda changes=changes: resolve_config(dataclasses.replace(quick_config(tmp_path), **changes))
        ).startswith(expected)
