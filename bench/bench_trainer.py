"""Benchmark the trainer's overhead: how much of a training step is not the model's own work.

    python bench/bench_trainer.py [--model small] [--batch 512] [--steps 8] [--threads N] [--device cpu]

On random uint8 3×32×32 data resident on the device, with the "quick" recipe, two timings per
defense ("none" and "rsk+ff"):
  full step   `Trainer.train_step` on batches of the seeded permutation: indexing, uint8 → float,
              the defense, RandomCrop + flip, Normalize, forward, backward, clipping, SGD, schedule;
  model only  `Trainer.update` (forward, backward, clipping, SGD, schedule) on one pre-made batch.
The overhead is 1 − model only / full step; the pipeline alone (indexing → model input) is also
timed directly, because on a shared machine a difference of two noisy timings can be off by more
than the thing measured. Every timing is the median over --steps rounds after a warm-up round,
the three taking turns within each round.
The model is `create_model(--model)` when unlearnable.models provides it, otherwise a stand-in
CNN of similar size (printed). The target is ≤ 5% overhead on a CPU without a defense.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from unlearnable.data import ImageDataset
from unlearnable.training.config import TrainConfig, resolve_config
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.trainer import Trainer


def stand_in_cnn(num_classes: int) -> nn.Module:
    """An airbench-like CNN (conv-BN-GELU blocks with max-pooling, 64/256/256 wide, ~2M parameters)."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.GELU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        nn.Conv2d(3, 24, 2, padding=0, bias=False),
        nn.BatchNorm2d(24),
        nn.GELU(),
        *block(24, 64),
        *block(64, 256),
        *block(256, 256),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(256, num_classes, bias=False),
    )


def build_model(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """`create_model(name)` if the models package has it, else the stand-in; with a description."""
    try:
        from unlearnable.models import create_model

        model = create_model(name, num_classes)
        label = f"create_model({name!r})"
    except (ImportError, KeyError, ValueError):
        model, label = stand_in_cnn(num_classes), "stand-in CNN (unlearnable.models has no create_model yet)"
    return model, f"{label}, {sum(p.numel() for p in model.parameters()):,} parameters"


def interleaved_medians(
    steps: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median wall time (ms) of each callable over `repeats` rounds, after one warm-up round.

    The callables take turns within every round, so a slow spell of a shared machine hits all of them.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def measure(defense: str, args: argparse.Namespace, data: ImageDataset, out: str) -> dict[str, float]:
    """Full step, model-only step and pipeline-only times (ms) for one defense."""
    config = resolve_config(
        TrainConfig(
            out=out, recipe=resolve_recipe("quick", batch_size=args.batch), defense=defense, device=args.device, seed=0
        )
    )
    torch.manual_seed(0)
    model, _ = build_model(args.model, data.num_classes)
    trainer = Trainer(config, data, data, model.to(config.device), ([0.5] * 3, [0.25] * 3))
    device = torch.device(config.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model.train()

    batches = iter(())

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = trainer.train_loader.shuffled(trainer.generator)
            batch = next(batches)
        return batch

    inputs = trainer.model_input(trainer.augment(next_batch()[0]))
    labels = next_batch()[1]
    return interleaved_medians(
        {
            "full": lambda: trainer.train_step(*next_batch()),
            "model": lambda: trainer.update(inputs, labels),
            "pipeline": lambda: trainer.model_input(trainer.augment(next_batch()[0])),
        },
        args.steps,
        sync,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    n = args.batch * 4
    data = ImageDataset(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (n,), generator=generator),
        [str(c) for c in range(10)],
    )
    print(f"model: {build_model(args.model, 10)[1]}")
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}×3×32×32, "
        f"median of {args.steps} steps"
    )
    print(f"{'defense':8} {'full step':>10} {'model only':>11} {'pipeline':>9} {'overhead':>9} {'pipeline/full':>14}")
    with tempfile.TemporaryDirectory() as out:
        for defense in ("none", "rsk+ff"):
            t = measure(defense, args, data, out)
            print(
                f"{defense:8} {t['full']:8.1f}ms {t['model']:9.1f}ms {t['pipeline']:7.1f}ms "
                f"{100 * (1 - t['model'] / t['full']):8.1f}% {100 * t['pipeline'] / t['full']:13.1f}%"
            )


if __name__ == "__main__":
    main()
