"""ImageNet-style training throughput: a memory-mapped 224² store streamed into ResNet-18.

    python bench/bench_imagenet_pipeline.py [--images 4096] [--batch 256] [--steps 20] [--device cuda]

Writes a synthetic store of --images smooth random 3×224×224 images (100 classes) as a saved
dataset, memory-maps it, and trains torchvision's ResNet-18 on it with the paper's recipe through
the trainer's own pipeline (RandomResizedCrop + flip on the device, Normalize, bf16 autocast and
channels_last on CUDA), for each data placement ("stream": batches gathered from the memory map by
background threads; "device": the whole store copied to the device first) and defense ("none",
"rsk+ff" with FF's ImageNet variant). For each it prints images/s and the share of the step spent
waiting for the next batch (the data-loading share; the rest is augmentation and the model).
Timings are over --steps steps after 3 warm-up steps, synchronised on CUDA. On a CPU use small
numbers (--images 256 --batch 32 --steps 4): it shows that the path works, not GPU speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnable.data import load_saved
from unlearnable.models import create_model
from unlearnable.training.trainer import NORMALIZATION_STATS, TrainConfig, Trainer, resolve_config, resolve_recipe


def write_store(directory: Path, count: int, size: int = 224) -> None:
    """A saved dataset of `count` smooth random size×size RGB images, labels 0..99 in turn."""
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(
        directory / "images.npy", mode="w+", dtype=np.uint8, shape=(count, size, size, 3)
    )
    for start in range(0, count, 256):
        stop = min(start + 256, count)
        coarse = torch.from_numpy(rng.integers(0, 256, (stop - start, 3, size // 16, size // 16), dtype=np.uint8))
        fine = torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="bilinear")
        images[start:stop] = fine.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    images.flush()
    np.save(directory / "labels.npy", np.arange(count, dtype=np.int64) % 100)
    (directory / "meta.json").write_text(json.dumps({"classes": [f"c{c}" for c in range(100)]}))


def measure(store: Path, placement: str, defense: str, args: argparse.Namespace) -> tuple[float, float]:
    """(images/s, share of step time spent waiting for the batch)."""
    data = load_saved(store)
    options = {"imagenet_variant": True} if "ff" in defense else {}
    recipe = resolve_recipe("paper", batch_size=args.batch)
    config = resolve_config(
        TrainConfig(
            out=str(store.parent / "run"),
            model="resnet18-imagenet",
            recipe=recipe,
            device=args.device,
            data_placement=placement,
            defense=defense,
            defense_options=options,
        )
    )
    torch.manual_seed(0)
    model = create_model("resnet18-imagenet", 100).to(config.device, memory_format=torch.channels_last)
    trainer = Trainer(config, data, data, model, [list(v) for v in NORMALIZATION_STATS["imagenet"]])
    trainer.model.train()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    batches = trainer.train_loader.shuffled(trainer.generator)
    waiting = total = 0.0
    for step in range(3 + args.steps):
        start = time.perf_counter()
        images, labels = next(batches)
        sync()
        ready = time.perf_counter()
        trainer.train_step(images, labels)
        sync()
        if step >= 3:
            waiting += ready - start
            total += time.perf_counter() - start
    return args.steps * args.batch / total, waiting / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.images < (3 + args.steps) * args.batch:
        parser.error(f"--images must be at least (3 + steps) × batch = {(3 + args.steps) * args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        write_store(store, args.images)
        name = (
            torch.cuda.get_device_name()
            if args.device.startswith("cuda")
            else f"cpu ({torch.get_num_threads()} threads)"
        )
        print(f"ResNet-18 (torchvision), 224², batch {args.batch}, {args.steps} steps, {name}")
        for placement in ("stream", "device"):
            for defense in ("none", "rsk+ff"):
                speed, share = measure(store, placement, defense, args)
                print(
                    f"  {placement:<7} {defense:<7} {speed:9.1f} img/s   waiting for data {100 * share:5.1f}% of the step"
                )


if __name__ == "__main__":
    main()
