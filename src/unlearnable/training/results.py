"""results.json: one schema (`RunResults`) that the trainer writes and every reader reads.

The trainer rewrites a run's results.json atomically after every epoch (`RunResults.write`); the
report, the experiment protocols, the audit and the resume checks read it with `RunResults.read`.
Reading is lenient: a field missing from the file (one written by an older version, e.g. without
``command``) takes its default, a field of the wrong type its default too, and keys this version
does not know are kept as they are (``extra``) and written back unchanged.

Files written before adversarial training moved into the defense chain record it as
``config["adversarial"]`` (a dict of PGD options, or null); `legacy_adversarial_chain` restates
such a config in today's terms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnable.data import ImageDataset
from unlearnable.errors import UserInputError
from unlearnable.io import write_json
from unlearnable.training._messages import first_line
from unlearnable.training.config import TrainConfig, config_to_dict
from unlearnable.training.host import device_name, host_info, versions

RESULTS = "results.json"
CHECKPOINT = "checkpoint.pt"
"""The two files of a run directory: the record (this module) and the state to resume from (`checkpoint`)."""
DIGEST_IMAGES = 2048
"""`data_fingerprint` hashes rows of at most this many images, evenly spaced over the dataset."""
DIGEST_ROWS = 8
"""... and of each such image at most this many whole rows (all channels), evenly spaced."""

CPU_NOTE = (
    "CPU runs repeat bit for bit on the same machine with the same host.threads, "
    "host.cpu_capability and versions; a change in any of them changes the numbers slightly"
)
GPU_NOTE = (
    "GPU kernels (cuDNN autotuning, atomics in backward passes) are nondeterministic: "
    "reruns with the same seed differ slightly"
)


@dataclass
class RunResults:
    """The record of one training run, as results.json holds it.

    Accuracies are percentages; train_* are measured on the batches the model trains on (defended,
    mixed, after the step hook) with the recipe's loss, train_acc against the original labels;
    test_loss is plain cross-entropy.

    Attributes:
        name: the run's name in reports.
        command: the command line that started the run (``"unlearnable train ..."``), or None
            (a run started from Python, or a file written before this field existed).
        config: the resolved TrainConfig (`config_to_dict`), the recipe as a nested dict.
        model: {name, class, parameters}.
        normalization: {stats, mean, std}, or None when the recipe does not normalise.
        versions: `host.versions` (unlearnable, torch, torchvision, python, numpy).
        device: the GPU's name, or "cpu (N threads)".
        host: `host.host_info` (threads, CPU model and capability, ...: what bit-exactness on the
            CPU depends on).
        deterministic: True on the CPU (a rerun repeats bit for bit), False on a GPU.
        seed: the run's seed.
        train_data, test_data: {source, attack, num_images, shape, num_classes, classes, spec,
            digest}: a summary and the `data_fingerprint` of each dataset.
        epochs: one record per finished epoch: epoch, train_loss, train_acc, test_loss, test_acc,
            lr, seconds, train_seconds, images_per_s.
        final: {test_acc_last, test_acc_best, best_epoch, wall_seconds, images_per_s}.
        status: "running" (written after each epoch) or "complete"; None if the file lacks it.
        preprocessed: with a preprocessing defense, what it recorded in the training set's meta
            (e.g. "deconv": the estimated kernels); otherwise None (not written).
        note: how far the numbers repeat (`CPU_NOTE`, `GPU_NOTE`).
        pipeline: {augment, data_placement} as resolved for the data.
        world_size: the number of processes that trained the run (torchrun).
        extra: keys of the file this version does not know, kept as they are.
    """

    name: str | None = None
    command: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    deterministic: bool | None = None
    seed: int | None = None
    train_data: dict[str, Any] = field(default_factory=dict)
    test_data: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    preprocessed: dict[str, Any] | None = None
    note: str | None = None
    pipeline: dict[str, Any] | None = None
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True once the trainer has marked the run complete."""
        return self.status == "complete"

    @property
    def last_test_acc(self) -> float | None:
        """The final test accuracy, or for an unfinished run the latest epoch's (None before the first)."""
        last = self.final.get("test_acc_last")
        if last is None and self.epochs:
            return self.epochs[-1].get("test_acc")
        return last

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order results.json has always had (``command`` after ``name``)."""
        data: dict[str, Any] = {"name": self.name, "command": self.command}
        for key in (
            "config",
            "model",
            "normalization",
            "versions",
            "device",
            "host",
            "deterministic",
            "seed",
            "train_data",
            "test_data",
            "epochs",
            "final",
            "status",
        ):
            data[key] = getattr(self, key)
        if self.preprocessed is not None:
            data["preprocessed"] = self.preprocessed
        data["note"] = self.note
        if self.pipeline is not None:
            data["pipeline"] = self.pipeline
        data["world_size"] = self.world_size
        return {**data, **{key: value for key, value in self.extra.items() if key not in data}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        """The record in a results.json object; missing or mistyped fields take their defaults."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for key, kind in _FIELD_TYPES.items():
            value = data.get(key)
            if key == "command" and isinstance(value, list):  # a command recorded as its argv
                value = shlex.join(str(part) for part in value)
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                values[key] = value
        if "epochs" in values:
            values["epochs"] = [record for record in values["epochs"] if isinstance(record, dict)]
        return cls(**values, extra={key: value for key, value in data.items() if key not in known})

    @classmethod
    def read(cls, path: str | Path) -> RunResults | None:
        """The results.json at `path`: None when there is none; UserInputError when it is not valid JSON."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserInputError(
                f"{path} is damaged ({first_line(e)}); delete it and run again with --resume: it "
                f"is rewritten from {CHECKPOINT}"
            ) from None
        if not isinstance(data, dict):
            raise UserInputError(
                f"{path} is damaged (not a JSON object); delete it and run again with --resume: it "
                f"is rewritten from {CHECKPOINT}"
            )
        return cls.from_dict(data)

    def write(self, path: str | Path) -> None:
        """Write results.json atomically (one top-level key per line)."""
        write_json(path, self.to_dict())


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "command": str,
    "config": dict,
    "model": dict,
    "normalization": dict,
    "versions": dict,
    "device": str,
    "host": dict,
    "deterministic": bool,
    "seed": int,
    "train_data": dict,
    "test_data": dict,
    "epochs": list,
    "final": dict,
    "status": str,
    "preprocessed": dict,
    "note": str,
    "pipeline": dict,
    "world_size": int,
}


def legacy_adversarial_chain(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config restated with adversarial training in the defense chain.

    Files written before the chain was the one way to ask for adversarial training have an
    ``adversarial`` field: null, or PGD options {norm, eps, steps, alpha, random_start}. Null is
    dropped; options with the default step size (`AdversarialTraining`) and a random start become
    "at-linf" / "at-l2" appended to the chain, with eps and steps as defense options: the same
    step hook, so the same run. Options the chain cannot express (another alpha, no random start,
    a chain with its own eps or steps) are left as they are.
    """
    if "adversarial" not in config:
        return config
    adversarial = config["adversarial"]
    rest = {key: value for key, value in config.items() if key != "adversarial"}
    if adversarial is None:
        return rest
    if not isinstance(adversarial, dict):
        return config
    from unlearnable.defenses.adversarial import AdversarialTraining

    options: dict[str, Any] = rest["defense_options"] if isinstance(rest.get("defense_options"), dict) else {}
    try:
        default = AdversarialTraining.from_options(
            {key: adversarial[key] for key in ("norm", "eps", "steps") if key in adversarial}
        ).to_dict()
    except (UserInputError, TypeError, ValueError):
        return config
    norm = default["norm"]
    alpha = adversarial.get("alpha")
    if (
        (alpha is not None and alpha != default["alpha"])
        or adversarial.get("random_start", True) is not True
        or "eps" in options
        or "steps" in options
    ):
        return config
    defense = str(rest.get("defense") or "none")
    chain = f"at-{norm}" if defense.strip().lower() == "none" else f"{defense}+at-{norm}"
    return {**rest, "defense": chain, "defense_options": {**options, "eps": default["eps"], "steps": default["steps"]}}


def data_fingerprint(dataset: ImageDataset, spec: str | None = None) -> dict[str, Any]:
    """Enough of a dataset to tell it from another at resume time, computed in well under a second.

    Keys: spec (how it was named, for the reader), num_images, shape, classes, and digest: SHA-256
    over the labels, the shape, and `DIGEST_ROWS` whole rows (every channel) of `DIGEST_IMAGES`
    images evenly spaced over the dataset, the rows evenly spaced and shifted by one per image.
    Whole rows keep the reads of a memory-mapped N×H×W×C store to a few pages per image; a poison
    that touches a few pixels of many images still changes the digest, though one confined to a
    few images outside the sample would not.
    """
    count = len(dataset)
    channels, height, width = dataset.shape
    digest = hashlib.sha256()
    digest.update(json.dumps([count, channels, height, width]).encode())
    digest.update(dataset.labels.to(torch.int64).contiguous().numpy().tobytes())
    if count:
        images = torch.linspace(0, count - 1, min(count, DIGEST_IMAGES), dtype=torch.float64).round().long().unique()
        rows = torch.linspace(0, height - 1, min(height, DIGEST_ROWS), dtype=torch.float64).round().long().unique()
        rows = (rows[None, :] + images[:, None]) % height  # shifted per image, so every row is sampled somewhere
        sample = dataset.images[images[:, None], :, rows, :]  # images × rows × C × W: only those bytes are read
        digest.update(sample.contiguous().numpy().tobytes())
    return {
        "spec": spec,
        "num_images": count,
        "shape": [channels, height, width],
        "classes": list(dataset.classes),
        "digest": digest.hexdigest(),
    }


def data_summary(dataset: ImageDataset) -> dict[str, Any]:
    """What the reader of results.json learns about a dataset: source, attack, size, shape and classes."""
    return {
        "source": dataset.meta.get("source"),
        "attack": dataset.meta.get("attack"),
        "num_images": len(dataset),
        "shape": list(dataset.shape),
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
    }


def final_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """`RunResults.final` for the epochs in `history`."""
    best = max(history, key=lambda record: record["test_acc"]) if history else None
    train_seconds = sum(record["train_seconds"] for record in history)
    images = sum(record["images_per_s"] * record["train_seconds"] for record in history)
    return {
        "test_acc_last": history[-1]["test_acc"] if history else None,
        "test_acc_best": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "wall_seconds": sum(record["seconds"] for record in history),
        "images_per_s": images / train_seconds if train_seconds else None,
    }


def run_results(
    config: TrainConfig,
    train_set: ImageDataset,
    test_set: ImageDataset,
    model: nn.Module,
    normalization: tuple[str, list[float], list[float]] | None,
    history: list[dict[str, Any]],
    complete: bool,
    preprocessed: dict[str, Any] | None = None,
    fingerprints: tuple[dict[str, Any], dict[str, Any]] | None = None,
    pipeline: dict[str, Any] | None = None,
    world_size: int = 1,
    command: str | None = None,
) -> RunResults:
    """The record of a resolved `config` after the epochs in `history` (see `RunResults`).

    `fingerprints` are the (train, test) `data_fingerprint` records when already computed.
    """
    device = torch.device(config.device or "cpu")
    on_cuda = device.type == "cuda"
    train_print, test_print = fingerprints or (
        data_fingerprint(train_set, config.train),
        data_fingerprint(test_set, config.test),
    )
    return RunResults(
        name=config.name,
        command=command,
        config=config_to_dict(config),
        model={
            "name": config.model,
            "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        normalization=None if normalization is None else dict(zip(("stats", "mean", "std"), normalization)),
        versions=versions(),
        device=device_name(device),
        host=host_info(device),
        deterministic=not on_cuda,
        seed=config.seed,
        train_data={**data_summary(train_set), **train_print},
        test_data={**data_summary(test_set), **test_print},
        epochs=history,
        final=final_summary(history),
        status="complete" if complete else "running",
        preprocessed=preprocessed,
        note=GPU_NOTE if on_cuda else CPU_NOTE,
        pipeline=pipeline,
        world_size=world_size,
    )
