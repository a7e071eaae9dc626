"""Kernel error and PSNR of the deconv defense on CIFAR-10 (JPEG copy) train split, per poison setting.

    python bench/eval_deconv.py [--limit N]

Prints per setting: mean kernel relative L2 error (both normalised to sum 1), and mean PSNR vs
clean of the poisoned and the recovered images (raw, and after a per-image least-squares gain,
since CUDA rescales every image by its max). One CPU thread.
"""

from __future__ import annotations

import argparse

import torch

from unlearnable.data import load_dataset
from unlearnable.defenses.deconv import kernel_errors, psnr, recover
from unlearnable.protect import poison_dataset

SETTINGS = {
    "cuda k3 pb0.3": {}, "cuda gray": {"grayscale": True}, "vuda": ("vuda", {}), "huda": ("huda", {}),
    "cuda k5": {"kernel_size": 5}, "cuda k9": {"kernel_size": 9}, "cuda pb0.5": {"blur_parameter": 0.5},
    "cuda mix0.5": {"mix": 0.5},
}


def gain_matched(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    a, b = images.double(), clean.double()
    gain = (a * b).sum(dim=(1, 2, 3), keepdim=True) / a.square().sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-9)
    return (a * gain).clamp(0, 255).round().to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=50_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clean = load_dataset("/work/shared/data/cifar10-jpeg.tar.gz", "train").subset(torch.arange(args.limit))
    print(f"{'setting':16} {'kernel err':>10} {'PSNR pois':>9} {'PSNR rec':>8} {'gain-matched pois/rec':>22}")
    for name, setting in SETTINGS.items():
        attack, params = setting if isinstance(setting, tuple) else ("cuda", setting)
        poisoned = poison_dataset(clean, attack, device="cpu", **params)
        recovered = recover(poisoned, params.get("kernel_size", 3))
        error = kernel_errors(torch.tensor(recovered.meta["deconv"]["kernels"]), torch.tensor(poisoned.meta["kernels"]))
        raw = psnr(poisoned.images, clean.images).mean(), psnr(recovered.images, clean.images).mean()
        fitted = (psnr(gain_matched(poisoned.images, clean.images), clean.images).mean(),
                  psnr(gain_matched(recovered.images, clean.images), clean.images).mean())
        print(f"{name:16} {100 * float(error.mean()):9.1f}% {float(raw[0]):9.2f} {float(raw[1]):8.2f} "
              f"{float(fitted[0]):10.2f} / {float(fitted[1]):.2f}", flush=True)


if __name__ == "__main__":
    main()
