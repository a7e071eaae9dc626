"""Training throughput of registry models on random CIFAR-sized data (fp32, CPU by default).

    python bench/bench_models.py [--models small resnet18] [--batch-size 256] [--steps 5] [--threads 2]
                                 [--steps-heavy 1] [--formats nchw channels_last]

One step is forward + cross-entropy + backward + SGD (momentum 0.9, Nesterov) on a random float
B×3×32×32 batch with random labels, K = 10. After --warmup steps, --steps steps are timed three
times; the best of the three counts (the machine may be shared). Each model is timed in the
contiguous (NCHW) and channels_last memory formats. Heavy models get few steps: pass
--steps-heavy for every model except "small".
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from unlearnable.models import MODELS, create_model

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def training_throughput(
    name: str,
    batch_size: int,
    steps: int,
    warmup: int,
    memory_format: torch.memory_format,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    """Best-of-`repeats` images/s of `steps` training steps of model `name` on random 32×32×3 data."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = max(best, steps * batch_size / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["small", "resnet18"], choices=MODELS.names())
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat for 'small'")
    parser.add_argument("--steps-heavy", type=int, default=1, help="timed steps per repeat for the other models")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    params = {name: sum(p.numel() for p in create_model(name, 10).parameters()) for name in args.models}
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, fp32, "
        f"forward+backward+SGD on 32×32×3, best of 3"
    )
    print(f"{'model':<18} {'params':>12} " + " ".join(f"{fmt + ' img/s':>20}" for fmt in args.formats))
    for name in args.models:
        steps = args.steps if name == "small" else args.steps_heavy
        rates = [training_throughput(name, args.batch_size, steps, args.warmup, FORMATS[fmt]) for fmt in args.formats]
        print(f"{name:<18} {params[name]:>12,} " + " ".join(f"{rate:>20.0f}" for rate in rates), flush=True)


if __name__ == "__main__":
    main()
