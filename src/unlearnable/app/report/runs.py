"""Reading runs for the report: results.json through the one schema, the Table-1 condition, the dataset's name."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnable.data import is_saved_dataset
from unlearnable.errors import UserInputError
from unlearnable.training.results import RESULTS, RunResults

DEFENSE = "rsk+ff"
"""The defense of the Table-1 condition cuda+rsk+ff, and the one the samples and spectra show."""
AT_HOOKS = ("at-linf", "at-l2")
"""The defense-chain names of PGD adversarial training."""

CONDITION_LABELS = {
    "clean": "clean",
    "cuda": "CUDA (no defense)",
    "cuda+at": "CUDA + AT (L∞ 4/255)",
    "cuda+rsk+ff": "CUDA + RSK+FF",
}
"""The four Table-1 conditions: key → label in the report's tables."""

# Kim & Sandoval-Segura (2024), Table 1: ResNet-18, last-epoch test accuracy (%) on the clean test set,
# 60 epochs of the paper recipe. Their AT column is the CUDA paper's (Sadasivan et al., CVPR 2023),
# PGD L∞ 4/255. Transcribed in /work/shared/TARGETS.md.
PUBLISHED: dict[str, dict[str, float]] = {
    "CIFAR-10": {"clean": 94.34, "cuda": 23.25, "cuda+at": 44.40, "cuda+rsk+ff": 78.53},
    "CIFAR-100": {"clean": 74.41, "cuda": 17.33, "cuda+at": 34.34, "cuda+rsk+ff": 53.33},
    "ImageNet-100": {"clean": 81.76, "cuda": 2.68, "cuda+at": 38.68, "cuda+rsk+ff": 43.08},
}

KIND_NAMES = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet100": "ImageNet-100",
    "fashion-mnist": "Fashion-MNIST",
}
JPEG_COPY = " (JPEG copy)"


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def read_meta(spec: Any) -> tuple[Path, dict[str, Any]] | None:
    """(directory, meta.json) of the saved dataset at `spec`, or None if it is not a readable one."""
    if not isinstance(spec, str) or not spec:
        return None
    path = Path(spec).expanduser()
    if not is_saved_dataset(path):
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (path, meta) if isinstance(meta, dict) else None


def dataset_name(source: Any, depth: int = 0) -> str:
    """A reader's name for the dataset a `source` dict ({spec, kind, path}) describes.

    Named kinds map to their usual spelling; an ImageFolder is named after its file (a CIFAR-10 folder
    is "CIFAR-10 (JPEG copy)"); a saved dataset is followed to the source recorded in its meta.json.
    """
    if not isinstance(source, dict):
        return "unknown dataset"
    kind = str(source.get("kind") or "").lower()
    if kind in KIND_NAMES:
        return KIND_NAMES[kind]
    location = str(source.get("path") or source.get("spec") or "")
    if kind == "saved":
        found = read_meta(location)
        if found is not None and depth < 5 and found[1].get("source"):
            return dataset_name(found[1]["source"], depth + 1)
        return f"saved dataset {Path(location).name}" if location else "unknown dataset"
    name = Path(location).name.lower()
    if re.search(r"cifar-?100", name):
        return "CIFAR-100" + JPEG_COPY
    if re.search(r"cifar-?10", name):
        return "CIFAR-10" + JPEG_COPY
    if re.search(r"imagenet-?100", name):
        return "ImageNet-100"
    if location:
        return f"{'ImageFolder' if kind == 'imagefolder' else kind or 'dataset'} {Path(location).name}"
    return "unknown dataset"


def published_for(dataset: str) -> dict[str, float] | None:
    """The published Table-1 numbers for `dataset` (a JPEG copy is compared with its original)."""
    return PUBLISHED.get(dataset.removesuffix(JPEG_COPY))


def is_linf_4(adversarial: dict[str, Any]) -> bool:
    """True for L∞ PGD at ε = 4/255 (0.015, the published code's value, counts too)."""
    eps = adversarial.get("eps")
    close = not isinstance(eps, (int, float)) or abs(eps * 255 - 4) < 0.25
    return str(adversarial.get("norm", "")).lower() == "linf" and close


def _hook_default(name: str, option: str) -> Any:
    from unlearnable.defenses import DEFENSES

    return inspect.signature(DEFENSES.get(name)).parameters[option].default


def adversarial_of(defense: Any, defense_options: Any = None, adversarial: Any = None) -> tuple[list[str], Any]:
    """(the chain's parts besides adversarial training, the PGD options {norm, eps, steps} or None).

    Adversarial training is the chain's at-linf / at-l2, with eps and steps from the defense options
    (their defaults when not given); a results.json written before that records it as the config's
    ``adversarial`` dict, which is returned as it is.
    """
    parts = [part.strip() for part in str(defense or "none").lower().split("+")]
    parts = [part for part in parts if part and part != "none"]
    hooks = [part for part in parts if part in AT_HOOKS]
    rest = [part for part in parts if part not in AT_HOOKS]
    if not hooks:
        return rest, adversarial or None
    options = defense_options if isinstance(defense_options, dict) else {}
    found = {"norm": hooks[0].removeprefix("at-")}
    for option in ("eps", "steps"):
        found[option] = options[option] if options.get(option) is not None else _hook_default(hooks[0], option)
    return rest, found


def condition_of(attack: Any, defense: Any, defense_options: Any = None, adversarial: Any = None) -> str:
    """The Table-1 condition of a run (a key of CONDITION_LABELS) or "other".

    Args:
        attack: the training set's attack (None for clean data).
        defense, defense_options: the run's defense chain and its options.
        adversarial: the ``adversarial`` field of a results.json written before adversarial training
            moved into the chain (None otherwise).
    """
    rest, at = adversarial_of(defense, defense_options, adversarial)
    chain = "+".join(rest) or "none"
    if not attack:
        return "clean" if chain == "none" and not at else "other"
    if str(attack).lower() != "cuda":
        return "other"
    if chain == "none" and not at:
        return "cuda"
    if chain == "none" and isinstance(at, dict) and is_linf_4(at):
        return "cuda+at"
    if chain == DEFENSE and not at:
        return "cuda+rsk+ff"
    return "other"


@dataclass
class Run:
    """One run directory's results.json and what the report derives from it."""

    path: Path
    results: RunResults
    dataset: str = ""
    condition: str = "other"
    saved_poison: Path | None = None

    @property
    def name(self) -> str:
        """The run's name, or its directory's."""
        return str(self.results.name or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        """The training config ({} when missing)."""
        return self.results.config

    @property
    def complete(self) -> bool:
        """True once the trainer marked the run complete."""
        return self.results.complete

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch records written so far."""
        return self.results.epochs

    @property
    def last_acc(self) -> Any:
        """The final test accuracy, or for an unfinished run the latest epoch's."""
        return self.results.last_test_acc

    @property
    def adversarial(self) -> Any:
        """The run's PGD adversarial training {norm, eps, steps}, or None (`adversarial_of`)."""
        config = self.config
        return adversarial_of(config.get("defense"), config.get("defense_options"), config.get("adversarial"))[1]

    @property
    def label(self) -> str:
        """The run name, with a flag when it has not finished."""
        if self.complete:
            return self.name
        return f"{self.name} (incomplete: {self.results.status or 'no status'})"


def load_run(run_dir: Path) -> Run | str:
    """The run in `run_dir`, or a one-line note saying why it cannot be read."""
    path = run_dir / RESULTS
    try:
        results = RunResults.read(path)
    except (UserInputError, OSError) as e:
        return f"{path}: unreadable ({e}); not shown."
    if results is None:
        return f"{run_dir}: no {RESULTS} yet; not shown."
    run = Run(run_dir, results)
    train_spec = run.config.get("train")
    saved = read_meta(train_spec) or read_meta(dig(results.train_data, "source", "path"))
    train_data = results.train_data
    attack = train_data["attack"] if "attack" in train_data else (saved[1].get("attack") if saved else None)
    source = train_data.get("source") or (saved[1].get("source") if saved else None)
    if source is None and isinstance(train_spec, str):
        source = {"kind": train_spec, "spec": train_spec, "path": train_spec}
    run.dataset = dataset_name(source)
    run.condition = condition_of(
        attack, run.config.get("defense"), run.config.get("defense_options"), run.config.get("adversarial")
    )
    if saved is not None and saved[1].get("attack"):
        run.saved_poison = saved[0]
    return run


def group_by_dataset(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs by dataset name, in the order each dataset first appears."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.dataset, []).append(run)
    return groups
