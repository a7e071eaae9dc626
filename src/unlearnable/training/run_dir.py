"""A run directory: where the run in it stands, and whether a new run may continue it.

A run directory holds results.json (`results.RunResults`) and checkpoint.pt (`checkpoint`). A run
is never written over: `open_run` refuses a directory that holds a run unless it is resumed, and
refuses to resume one trained with other settings, another device type or world size, or other
data (`check_same_run`, on the `run_identity` kept in every checkpoint). `run_state`,
`describe_run` and `interrupted_message` say where a run stands, for messages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from unlearnable import distributed
from unlearnable.data import ImageDataset
from unlearnable.errors import UserInputError
from unlearnable.training._messages import short
from unlearnable.training.checkpoint import load_checkpoint, peek_checkpoint
from unlearnable.training.config import TrainConfig, config_to_dict, resolve_config
from unlearnable.training.results import CHECKPOINT, RESULTS, RunResults, data_fingerprint, legacy_adversarial_chain

MUST_MATCH_ON_RESUME = (
    "model",
    "recipe",
    "defense",
    "defense_options",
    "seed",
    "rotate",
    "augment",
    "sync_batchnorm",
    "normalization",
)
"""Config fields a resumed run must share with the run it continues (adversarial training is in the defense chain)."""
DATA_MUST_MATCH = ("num_images", "shape", "classes", "digest")
"""Fields of a data fingerprint (`data_fingerprint`) a resumed run must see again; the spec and the
recorded source may differ (a dataset moved or named by another path is the same data)."""


def run_identity(
    config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset, world: distributed.World
) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (JSON-ready; kept in every checkpoint)."""
    return {
        "config": config_to_dict(config),
        "world_size": world.size,
        "train_data": data_fingerprint(train_set, config.train),
        "test_data": data_fingerprint(test_set, config.test),
    }


def identity_from_results(results: RunResults | None) -> dict[str, Any]:
    """The identity of a run whose checkpoint predates ``run`` records: what its results.json says."""
    if results is None:
        return {}
    return {
        "config": results.config,
        "world_size": results.world_size,
        "train_data": results.train_data,
        "test_data": results.test_data,
    }


def recorded_identity(state: dict[str, Any], results: RunResults | None) -> dict[str, Any]:
    """The identity a checkpoint records, or for an older checkpoint the one its results.json gives."""
    return state["run"] if isinstance(state.get("run"), dict) else identity_from_results(results)


def open_run(out: Path, resume: bool, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start afresh), after every check of the directory `out`.

    Raises UserInputError: `out` holds a run and `resume` is off; or resuming is impossible (a
    damaged file, results.json without checkpoint.pt) or would mix two runs (`check_same_run`).
    """
    has_checkpoint = (out / CHECKPOINT).is_file()
    if not resume:
        if has_checkpoint or (out / RESULTS).is_file():
            where = run_state(out)
            advice = (
                "pass --resume to keep it as it is, or choose another --out"
                if where["complete"]
                else "continue it with --resume, or choose another --out"
            )
            raise UserInputError(f"{describe_run(out)}; {advice}")
        return None
    previous = RunResults.read(out / RESULTS)
    if not has_checkpoint:
        if previous is None:
            return None  # nothing to continue: a new run
        if previous.complete:
            raise UserInputError(f"{out} holds a finished run but no {CHECKPOINT} to resume from; choose another --out")
        raise UserInputError(
            f"cannot resume: {describe_run(out)} but its {CHECKPOINT} is missing; choose another "
            f"--out, or delete {out / RESULTS} to start over"
        )
    state = load_checkpoint(out / CHECKPOINT)
    check_same_run(identity, recorded_identity(state, previous), out)
    return state


def check_finished_run(config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset) -> None:
    """Refuse to count the finished run in ``config.out`` as this one when its settings or data differ
    (`check_same_run`): a rerun that skips finished runs must not report a run trained otherwise."""
    world = distributed.init()
    config = resolve_config(dataclasses.replace(config, device=distributed.training_device(world, config.device)))
    out = Path(config.out)
    state = load_checkpoint(out / CHECKPOINT) if (out / CHECKPOINT).is_file() else {}
    check_same_run(
        run_identity(config, train_set, test_set, world), recorded_identity(state, RunResults.read(out / RESULTS)), out
    )


def check_same_run(current: dict[str, Any], recorded: dict[str, Any], out: Path) -> None:
    """Resuming with other settings, another device type or other data would mix two runs: refuse it.

    Both are `run_identity` records; a field the recorded run lacks (an older version's) is not
    checked, and a recorded ``adversarial`` option is read as the chain it equals
    (`legacy_adversarial_chain`). The message names each differing field with its old → new value,
    never whole records.
    """
    old_config, new_config = legacy_adversarial_chain(recorded.get("config") or {}), current["config"]
    differences: list[str] = []
    for key in MUST_MATCH_ON_RESUME:
        if key in old_config:
            differences += _differences(key, old_config[key], new_config[key])
    if old_config.get("adversarial") is not None:  # options the chain cannot express
        differences += _differences("adversarial", old_config["adversarial"], None)
    if old_config.get("device") is not None:
        old_type, new_type = _device_type(old_config["device"]), _device_type(new_config["device"])
        if old_type != new_type:
            differences.append(f"device type {old_type} → {new_type}")
    for part, label in (("train_data", "training data"), ("test_data", "test data")):
        old_data, new_data = recorded.get(part) or {}, current[part]
        changed = [
            change
            for key in DATA_MUST_MATCH
            if key in old_data
            for change in _differences(f"{label} {key}", old_data[key], new_data[key])
        ]
        if changed and old_data.get("spec") != new_data.get("spec"):
            changed.append(f"{label} spec {short(old_data.get('spec'))} → {short(new_data.get('spec'))}")
        differences += changed
    if differences:
        raise UserInputError(
            f"cannot resume {out}: it was started with other settings or data: "
            f"{'; '.join(differences)}; use the same ones, or choose another --out"
        )
    old_size = recorded.get("world_size", 1)
    if old_size != current["world_size"]:
        raise UserInputError(
            f"cannot resume {out}: it was trained by {old_size} processes, now "
            f"{current['world_size']}; the data shards and random streams depend on it, so resume "
            f"with torchrun --nproc-per-node {old_size} (in all), or choose another --out"
        )


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def _differences(name: str, old: Any, new: Any) -> list[str]:
    """["name.sub old → new", ...] for the leaves where `old` and `new` differ (dicts compared key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(set(old) | set(new), key=str)
            for change in _differences(f"{name}.{key}", old.get(key), new.get(key))
        ]
    if old == new:
        return []
    if isinstance(old, list) and isinstance(new, list) and len(repr(old)) + len(repr(new)) > 80:
        if len(old) != len(new):
            return [f"{name} {len(old)} items → {len(new)} items"]
        index = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        return [f"{name}[{index}] {short(old[index])} → {short(new[index])}"]
    return [f"{name} {short(old)} → {short(new)}"]


def run_state(out: str | Path) -> dict[str, Any]:
    """Where the run in directory `out` stands, from its files, without raising.

    The checkpoint is read lazily (memory-mapped, no tensor data): it is written before results.json
    after every epoch, so it is the one that is never behind.

    Returns:
        {"files": names of checkpoint.pt / results.json present, "epoch": the last finished epoch
        (None when neither file says), "epochs": the run's total (or None), "complete": every epoch
        is done, "command": the command line that started the run (None when not recorded)}.
    """
    out = Path(out)
    files = [name for name in (CHECKPOINT, RESULTS) if (out / name).is_file()]
    try:
        results = RunResults.read(out / RESULTS) or RunResults()
    except (UserInputError, OSError):
        results = RunResults()
    epoch = len(results.epochs) if results.epochs else None
    config: dict[str, Any] = results.config
    command = results.command
    if CHECKPOINT in files:
        try:
            state = peek_checkpoint(out / CHECKPOINT)
            epoch = int(state["epoch"])
            if isinstance(state.get("run"), dict):
                config = state["run"].get("config") or config
            command = command or (state["command"] if isinstance(state.get("command"), str) else None)
        except Exception:  # noqa: BLE001 - a damaged checkpoint: say what results.json says
            pass
    recipe: dict[str, Any] = config["recipe"] if isinstance(config.get("recipe"), dict) else {}
    epochs = recipe.get("epochs")
    complete = results.complete or (epoch is not None and epoch == epochs)
    return {"files": files, "epoch": epoch, "epochs": epochs, "complete": complete, "command": command}


def describe_run(out: str | Path) -> str:
    """ "OUT holds a finished run ..." / "an interrupted run at epoch E of N" / "an earlier run": the run in `out`."""
    where = run_state(out)
    if where["complete"]:
        return f"{out} holds a finished run ({where['epochs']} epochs)"
    if where["epoch"] is not None:
        return f"{out} holds an interrupted run at epoch {where['epoch']} of {where['epochs']}"
    return f"{out} holds an earlier run ({', '.join(where['files'])})"


def interrupted_message(out: str | Path, command: str | None = None) -> str:
    """What an interrupted `train` kept in `out` and how to continue it: one line for the CLI to print.

    Args:
        out: the run directory.
        command: the command line that was interrupted (e.g. ``"unlearnable train --train cifar10
            --out runs/a"``); by default the one the run recorded (`RunResults.command`). The advice
            is that line with --resume (added when it lacks it).
    """
    where = run_state(out)
    command = command or where["command"]
    again = command if command else "the same command"
    if not where["files"]:
        return f"no epoch had finished, so nothing was kept in {out}; run {again} again to start over"
    if command:
        again = command if "--resume" in command.split() else f"{command} --resume"
    else:
        again = "the same command with --resume"
    if where["complete"]:
        return f"{out} holds the finished run ({', '.join(where['files'])}); {again} returns it as it is"
    if where["epoch"] is not None:
        kept = f"epoch {where['epoch']} of {where['epochs']} is kept in {out} ({', '.join(where['files'])})"
    else:
        kept = f"{out} keeps {', '.join(where['files'])}"
    return f"{kept}; continue with: {again}"
