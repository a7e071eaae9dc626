"""What a training run will cost: a quick measured speed of the model on this machine.

    speed = measure_speed("resnet18", (3, 32, 32), num_classes=10, device="cpu")   # images/s

`measure_speed` times a few forward + backward passes of a freshly built model on a small synthetic
batch of the run's image shape, on the run's device, with the trainer's memory format (channels
last) and, on CUDA, its bf16 autocast. It leaves the global random state as it found it, so a run
trained after the probe is the run trained without it.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from unlearnable.models import create_model

PROBE_PIXELS = 16 * 32 * 32
"""Pixels per probe batch on the CPU: 16 images at 32×32 (ResNet-18: about 0.15 s a step on 2 cores)."""
CUDA_BATCH = 128
"""Largest probe batch on CUDA (small batches leave a GPU idle and understate its speed)."""
SLOW_STEP = 0.5
"""Seconds: a warm-up step slower than this is followed by one timed step instead of `steps`."""
MIN_SECONDS = 0.25
"""Fast models take more timed steps, up to MAX_STEPS, until they have run this long (a median of few
milliseconds-long steps would be at the mercy of other processes)."""
MAX_STEPS = 20


def probe_batch(image_shape: tuple[int, int, int], device: torch.device, batch_size: int | None = None) -> int:
    """Images per probe batch: ~PROBE_PIXELS on the CPU, up to CUDA_BATCH on CUDA, at most `batch_size`, at least 2."""
    _, height, width = image_shape
    size = CUDA_BATCH if device.type == "cuda" else PROBE_PIXELS // max(1, height * width)
    if batch_size is not None:
        size = min(size, batch_size)
    return max(2, size)  # BatchNorm needs two values per channel


def measure_speed(
    model: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    steps: int = 2,
) -> float:
    """Training images per second of `model` on `device`, from one warm-up and `steps` timed steps.

    Args:
        model: a name in ``MODELS`` (built here with a fixed seed, then dropped).
        image_shape: (C, H, W) of one training image.
        num_classes: logits of the model.
        device: where the run trains.
        batch_size: the run's batch size: the probe batch is never larger (see `probe_batch`).
        steps: timed forward + backward passes after the warm-up, at least (1 when the warm-up took over
            SLOW_STEP s; more, up to MAX_STEPS, until MIN_SECONDS have passed).

    Returns:
        images per second of forward + backward at the median step time (no optimiser step, data loading
        or augmentation).
    """
    device = torch.device(device)
    channels, height, width = image_shape
    batch = probe_batch(image_shape, device, batch_size)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = create_model(model, num_classes, channels).to(device).to(memory_format=torch.channels_last).train()
        x = torch.rand(batch, channels, height, width, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (batch,), device=device)

        def step() -> float:
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = net(x)
            nn.functional.cross_entropy(logits.float(), y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        times = [step()]  # the warm-up: not counted
        if times[0] > SLOW_STEP:
            times = [step()]
        else:
            times = []
            while len(times) < max(1, steps) or (sum(times) < MIN_SECONDS and len(times) < MAX_STEPS):
                times.append(step())
    return batch / statistics.median(times)
