"""Train the DDPM of the diffpure defense on CLEAN images and write a checkpoint for it.

    python bench/train_diffusion.py --data ../shared/data/cifar10-jpeg.tar.gz --split test --out DIR
        [--per-class N] [--subset-seed 0] [--image-size S] [--steps 2000] [--batch-size 128]
        [--lr 2e-4] [--warmup 5000] [--ema 0.9999] [--width 64] [--channel-mult 1,2,2]
        [--res-blocks 2] [--attention 16] [--dropout 0.1] [--seed 0] [--device cpu|cuda]
        [--threads N] [--log-every 50] [--overwrite]

The defense is only fair when the DDPM never saw the poisoned training images, nor their clean
originals: train it on the test split (ECLIPSE: 2,000 random CIFAR-10 test images, i.e.
``--split test --per-class 200``) or on other clean data. ``--split train`` works (AVATAR's model
saw the clean CIFAR-10 training set) but prints a warning, and the defense warns again when it
purifies images of the same source and split. The checkpoint records what the model was trained
on (the data spec, split, the dataset's meta["source"], the number of images and the indices of a
--per-class subset) and how (steps, batch, learning rate, EMA, seed, the mean loss of the last
100 steps); see ``unlearnable.defenses.diffusion`` for the format. Then:

    unlearnable.defenses.diffusion.DiffusionPurification(checkpoint="DIR")(poisoned_dataset)

Published scale: DDPM's CIFAR-10 run is 800k steps at batch 128 (width 128, channel_mult
1,2,2,2, 2 res blocks, attention at 16); ECLIPSE trains 250k iterations. That needs a GPU: on
the 2 shared CPU cores of the development machine one step of the default model (width 64) at
batch 64 took about 8 s.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

from unlearnable.data import load_dataset
from unlearnable.data.dataset import stratified_subset
from unlearnable.defenses.diffusion import DDPMConfig, save_checkpoint, train_ddpm
from unlearnable.errors import UserInputError
from unlearnable.params import POSITIVE_INT, SEED, Interval, device

SHARED_CIFAR = "../shared/data/cifar10-jpeg.tar.gz"


def int_list(text: str) -> tuple[int, ...]:
    """argparse ``type=``: "1,2,2" → (1, 2, 2); "" → ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers (got {text!r})") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=SHARED_CIFAR, help="clean images: a dataset name or path (default: %(default)s)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="(default: %(default)s)")
    p.add_argument("--per-class", type=POSITIVE_INT, help="a stratified subset of N images per class (default: all)")
    p.add_argument("--subset-seed", type=SEED, default=0, help="seed of the --per-class choice")
    p.add_argument("--image-size", type=Interval(int, 8, 1024), help="stretch the images to S×S first")
    p.add_argument("--out", required=True, help="the checkpoint: a directory, or a file ending in .pt")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint this tool wrote")
    p.add_argument("--steps", type=POSITIVE_INT, default=2000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    p.add_argument("--lr", type=Interval(float, 0, closed="neither"), default=2e-4)
    p.add_argument("--warmup", type=Interval(int, 0), default=5000, help="linear warm-up steps (DDPM: 5000)")
    p.add_argument("--ema", type=Interval(float, 0, 1, closed="left"), default=0.9999, help="EMA decay")
    p.add_argument("--width", type=POSITIVE_INT, default=64, help="channels of the first level (DDPM: 128)")
    p.add_argument("--channel-mult", type=int_list, default=(1, 2, 2), help="per-level multipliers (DDPM: 1,2,2,2)")
    p.add_argument("--res-blocks", type=POSITIVE_INT, default=2, help="residual blocks per level")
    p.add_argument("--attention", type=int_list, default=(16,), help="resolutions with attention ('' for none)")
    p.add_argument("--dropout", type=Interval(float, 0, 1, closed="left"), default=0.1)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--log-every", type=POSITIVE_INT, default=50, help="print the mean loss every N steps")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        clean = load_dataset(args.data, args.split, image_size=args.image_size)
        if args.per_class is not None:
            clean = stratified_subset(clean, args.per_class, args.subset_seed)
        if args.split == "train":
            warnings.warn(
                "training the DDPM on the train split: it sees the clean originals of the images it will "
                "purify; --split test keeps the defense fair",
                stacklevel=1,
            )
        if clean.shape[1] != clean.shape[2]:
            raise UserInputError(
                f"the images are {clean.shape[1]}×{clean.shape[2]}; pass --image-size S for square ones"
            )
        config = DDPMConfig(
            image_size=clean.shape[1],
            channels=clean.shape[0],
            width=args.width,
            channel_mult=args.channel_mult,
            num_res_blocks=args.res_blocks,
            attention_resolutions=args.attention,
            dropout=args.dropout,
        )
        print(
            f"{len(clean)} clean images {'×'.join(map(str, clean.shape))} from {args.data} ({args.split}), "
            f"device {args.device}, {args.steps} steps at batch {args.batch_size}",
            flush=True,
        )
        window: list[float] = []
        start = time.perf_counter()

        def report(step: int, loss: float) -> None:
            window.append(loss)
            if step % args.log_every == 0 or step == args.steps:
                elapsed = time.perf_counter() - start
                print(f"step {step:>7}  loss {sum(window) / len(window):.4f}  {elapsed / step:.3f} s/step", flush=True)
                window.clear()

        model, losses = train_ddpm(
            clean.images,
            config,
            args.steps,
            args.batch_size,
            args.lr,
            args.warmup,
            args.ema,
            seed=args.seed,
            device=args.device,
            progress=report,
        )
        subset = clean.meta.get("subset")
        training = {
            "data": args.data,
            "split": args.split,
            "source": clean.meta.get("source"),
            "images": len(clean),
            "per_class": args.per_class,
            "subset_seed": args.subset_seed if args.per_class is not None else None,
            "indices": subset["indices"] if subset else None,
            "image_size": args.image_size,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup": args.warmup,
            "ema_decay": args.ema,
            "seed": args.seed,
            "device": str(args.device),
            "seconds": round(time.perf_counter() - start, 1),
            "final_loss": sum(losses[-100:]) / len(losses[-100:]),
            "torch": torch.__version__,
        }
        out = save_checkpoint(args.out, model, training, overwrite=args.overwrite)
    except UserInputError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
