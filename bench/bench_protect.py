"""Throughput and peak memory of `protect_folder` on 12-megapixel photos, vs a naive per-image loop.

Generates N synthetic 4000×3000 JPEGs (smooth colour fields plus texture, quality 92) in a scratch
folder, then in two fresh child processes (so each one's peak RSS is its own):
- "protect_folder": the library (thread pool of --workers, float32, streaming, atomic output);
- "naive": the same math written plainly, one photo after another in float64: decode with PIL,
  area-downsample / blur / bilinear-upsample with torch per scale, round, encode JPEG q95.
Prints photos/s, peak RSS (resource.getrusage) and the ratio of the two measured in this run.

Run:  .venv/bin/python bench/bench_protect.py --count 12 --work /tmp/owner/bench
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_photos(root: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        cls = root / f"class{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        small = rng.random((30, 40, 3))
        image = Image.fromarray((small * 255).astype(np.uint8)).resize((4000, 3000), Image.BICUBIC)
        texture = rng.integers(0, 24, (3000, 4000, 1), dtype=np.uint8)
        pixels = np.asarray(image, dtype=np.uint8) // 2 + texture * 3
        Image.fromarray(pixels).save(cls / f"photo{i:03d}.jpg", quality=92)


def naive(src: Path, dst: Path, strength: str) -> None:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from unlearnable.attacks.multiscale import STRENGTHS, class_kernels

    params = STRENGTHS[strength]
    classes = sorted(p.name for p in src.iterdir())
    kernels = class_kernels(len(classes), params, 0)
    for c, name in enumerate(classes):
        (dst / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((src / name).iterdir()):
            x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255)
            x = x.permute(2, 0, 1)[None]
            h, w = x.shape[-2:]
            out = x.clone()
            k = params.kernel_size
            kernel = torch.from_numpy(kernels[c].astype(np.float64)).reshape(1, 1, k, k).repeat(3, 1, 1, 1)
            for r in params.scales:
                scale = r / min(h, w)
                grid = (round(h * scale), round(w * scale))
                small = F.interpolate(x, size=grid, mode="area")
                blurred = F.conv2d(F.pad(small, (k // 2,) * 4, mode="reflect"), kernel, groups=3)
                out = out + F.interpolate(blurred - small, size=(h, w), mode="bilinear", align_corners=False)
            pixels = (out[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=95, subsampling=0)
            (dst / name / path.name).write_bytes(buffer.getvalue())


def child(mode: str, src: Path, dst: Path, strength: str, workers: int) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.joinpath(f"{dst.name}.key.json").unlink(missing_ok=True)
    t = time.perf_counter()
    if mode == "naive":
        naive(src, dst, strength)
    else:
        from unlearnable.app.owner import protect_folder

        protect_folder(src, dst, strength=strength, workers=workers, progress=False)
    seconds = time.perf_counter() - t
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/unlearnable-bench-protect"))
    parser.add_argument("--strength", default="mid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    src = args.work / "photos"
    if args.child:
        child(args.child[0], src, Path(args.child[1]), args.strength, args.workers)
        return
    if not src.exists() or sum(1 for _ in src.rglob("*.jpg")) != args.count:
        shutil.rmtree(src, ignore_errors=True)
        make_photos(src, args.count)
    results = {}
    for mode in ("protect_folder", "naive"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--count",
                str(args.count),
                "--work",
                str(args.work),
                "--strength",
                args.strength,
                "--workers",
                str(args.workers),
                "--child",
                mode,
                str(args.work / f"out-{mode}"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        print(
            f"{mode:>15}: {args.count / r['seconds']:.2f} photos/s (12 MP, {args.count} photos, "
            f"{r['seconds']:.1f} s), peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    ratio = results["naive"]["seconds"] / results["protect_folder"]["seconds"]
    print(f"protect_folder is {ratio:.2f}× the naive loop's throughput (same run, same photos)")


if __name__ == "__main__":
    main()
