"""Detection accuracy of `unlearnable detect`, per image (edge detector) and per dataset (the verdict).

    python bench/eval_detect.py [--draws 20] [--subset 2000] [--calibrate]

For CIFAR-10 (JPEG copy, ../shared/data/cifar10-jpeg.tar.gz) and Fashion-MNIST, the clean reference is
the test split (10,000 images) and everything evaluated comes from the train split, which neither the
calibration nor the edge detector's training ever sees:
  dataset level  --draws class-balanced subsets of --subset training images per condition (a fresh
                 subset and a fresh key for each draw: seeds 1000 + draw); condition "clean" is the
                 subset itself; flagged = the verdict of `unlearnable.analysis.detect.looks_convolved`;
  per image      the edge detector trained once on the test split (clean vs fresh random keys, as at
                 detect time), applied to 5 of those draws per condition; flagged fraction of the
                 images the attack changed (of all images for clean).
Conditions: CUDA, VUDA, HUDA with their defaults (k 3, p_b 0.3), grayscale CUDA, CUDA with k 5 and
p_b 0.1, CUDA with half of the images poisoned (mix 0.5), and whichever of the additive poisons
ops, lsp, ar, noise are registered in unlearnable.attacks.ATTACKS (defaults, seed per draw). For the convolutions a flag is a hit; for the additive poisons it is reported as a rate.
Columns: datasets flagged (the verdict), the spectral score, compression = −spread / shift (nats of
within-class log-variance lost per nat of kernel-shaped shift; the verdict needs ≤ COMPRESSION_LIMIT),
and the fraction of (changed) images the edge detector flags.

--calibrate prints the null distribution used to set SPECTRAL_THRESHOLD instead:
per dataset, --draws × 5 class-balanced --subset draws of the *test* split against the rest of it.
Runs on one thread in about a minute (--calibrate: about a minute and a half).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unlearnable.analysis.detect import (
    COMPRESSION_LIMIT,
    SPECTRAL_THRESHOLD,
    class_spectra,
    looks_convolved,
    spectral_evidence,
    train_edge_detector,
)
from unlearnable.attacks import ATTACKS
from unlearnable.attacks.apply import poison_dataset
from unlearnable.data import ImageDataset, load_dataset, stratified_subset

CIFAR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz")
DATASETS = {"CIFAR-10 (JPEG copy)": CIFAR, "Fashion-MNIST": "fashion-mnist"}
CONVOLUTIONS = {
    "cuda": ("cuda", {}),
    "vuda": ("vuda", {}),
    "huda": ("huda", {}),
    "gray-cuda": ("cuda", {"grayscale": True}),
    "cuda-k5-pb0.1": ("cuda", {"kernel_size": 5, "blur_parameter": 0.1}),
    "cuda-mix0.5": ("cuda", {"mix": 0.5}),
}
ADDITIVE = ("ops", "lsp", "ar", "noise")
EDGE_DRAWS = 5


def conditions() -> tuple[dict[str, tuple[str, dict] | None], list[str]]:
    """Condition name → (attack, params) (None = clean), and the additive poisons not registered."""
    found = {name: (name, {}) for name in ADDITIVE if name in ATTACKS}
    return {"clean": None, **CONVOLUTIONS, **found}, [name for name in ADDITIVE if name not in ATTACKS]


def make(sub: ImageDataset, condition: tuple[str, dict] | None, seed: int) -> ImageDataset:
    if condition is None:
        return sub
    attack, params = condition
    return poison_dataset(sub, attack, device="cpu", seed=seed, progress=False, **params)


def evaluate(spec: str, draws: int, subset: int) -> list[dict]:
    """Rows of the table for one dataset."""
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    k = train.num_classes
    h, w = train.shape[1:]
    reference = class_spectra(test.images, test.labels, k)
    detector, fpr, tpr = train_edge_detector(test, seed=0)
    print(f"  edge detector, held-out half of the test split: clean flagged {fpr:.1%}, fresh-key poisoned {tpr:.1%}")
    rows = []
    for name, condition in conditions()[0].items():
        scores, compressions, verdicts, edge = [], [], [], []
        for draw in range(draws):
            seed = 1000 + draw
            ds = make(stratified_subset(train, subset // k, seed), condition, seed)
            s = spectral_evidence(class_spectra(ds.images, ds.labels, k), reference, h, w)
            scores.append(s.score)
            compressions.append(-s.spread / s.shift)
            verdicts.append(looks_convolved(s))
            if draw < EDGE_DRAWS:  # flagged among the images the attack changed (all of them for clean)
                changed = torch.tensor(ds.meta.get("poisoned_indices", range(len(ds))), dtype=torch.int64)
                edge.append(float(detector.flag(ds.images[changed]).double().mean()))
        rows.append(
            {
                "condition": name,
                "flagged": sum(verdicts),
                "draws": draws,
                "score": np.array(scores),
                "compression": np.array(compressions),
                "edge": float(np.mean(edge)),
            }
        )
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        "| condition | datasets flagged | score median [min, max] | compression median [min, max] | changed images flagged (edge) |"
    )
    print("|---|---:|---|---|---:|")
    for r in rows:
        s, p = r["score"], r["compression"]
        print(
            f"| {r['condition']} | {r['flagged']}/{r['draws']} | {np.median(s):.2f} [{s.min():.2f}, {s.max():.2f}] | "
            f"{np.median(p):+.2f} [{p.min():+.2f}, {p.max():+.2f}] | {r['edge']:.1%} |"
        )
    clean = next(r for r in rows if r["condition"] == "clean")
    convolved = [r for r in rows if r["condition"] in CONVOLUTIONS]
    correct = clean["draws"] - clean["flagged"] + sum(r["flagged"] for r in convolved)
    total = clean["draws"] + sum(r["draws"] for r in convolved)
    balanced = np.mean([(1 - clean["edge"] + r["edge"]) / 2 for r in convolved])
    print(
        f"dataset-level accuracy, clean vs {', '.join(CONVOLUTIONS)}: {correct}/{total} = {correct / total:.1%}; "
        f"per-image edge accuracy (balanced, clean vs each convolution, averaged): {balanced:.1%}"
    )


def calibrate(spec: str, draws: int, subset: int) -> None:
    """Null distribution: class-balanced subsets of the test split against the rest of the split."""
    test = load_dataset(spec, "test")
    k = test.num_classes
    h, w = test.shape[1:]
    scores = []
    for draw in range(draws):
        sub = stratified_subset(test, subset // k, draw)
        rest = np.setdiff1d(np.arange(len(test)), sub.meta["subset"]["indices"])
        ref = class_spectra(test.images[torch.from_numpy(rest)], test.labels[torch.from_numpy(rest)], k)
        s = spectral_evidence(class_spectra(sub.images, sub.labels, k), ref, h, w)
        scores.append(s.score)
    scores = np.array(scores)
    print(
        f"{spec}: {draws} clean subsets of {subset} vs the rest of the test split: "
        f"score mean {scores.mean():.3f}, 99% {np.quantile(scores, 0.99):.3f}, max {scores.max():.3f} "
        f"(threshold {SPECTRAL_THRESHOLD})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=20, help="subsets (and keys) per condition (default 20)")
    parser.add_argument("--subset", type=int, default=2000, help="images per subset (default 2000)")
    parser.add_argument("--calibrate", action="store_true", help="print the null distribution instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.calibrate:
        for spec in DATASETS.values():
            calibrate(spec, args.draws * 5, args.subset)
    else:
        missing = conditions()[1]
        print(
            f"additive poisons evaluated: {', '.join(n for n in ADDITIVE if n not in missing) or 'none'}; "
            f"missing from ATTACKS: {', '.join(missing) or 'none'}"
        )
        for title, spec in DATASETS.items():
            print(f"{title}:")
            rows = evaluate(spec, args.draws, args.subset)
            print_table(
                f"{title}: {args.draws} class-balanced subsets of {args.subset} training images per condition, "
                f"reference = the test split; threshold {SPECTRAL_THRESHOLD}, compression limit {COMPRESSION_LIMIT}",
                rows,
            )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
