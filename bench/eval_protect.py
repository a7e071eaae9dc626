"""Does `unlearnable protect` work on real photos? Effect on a trainer and visibility, per strength.

The collection (e.g. /work/shared/data/clothing-photos.tar.gz extracted to /tmp; phone photos
400×400..400×936, 10 classes, train/ and test/) has its train split protected at native resolution
by `protect_folder` at each strength; then, as a user would, every published photo is stretched to
R×R (R = 32 and 64, the project's ImageFolder loader, bilinear) and the small CNN is trained
(`quick` recipe, batch 64, --epochs epochs) on it and tested on the clean test split, also resized.
Visibility: PSNR and SSIM of published vs source at native resolution over the train split.
Also: the same at "mid" with lossless PNG output (the sources are JPEGs, so --format same writes
JPEG at quality 95: the difference is what lossy output costs), and the visibility of the other
resolution scheme (blur at native resolution with the kernel enlarged by native/32, scheme b).

Run:  .venv/bin/python bench/eval_protect.py --data /tmp/owner/clothing-photos --work /tmp/owner/eval
Each result is appended to WORK/results.jsonl as it is measured (a rerun skips finished ones);
`--seeds 0,1,2` trains every condition once per training seed (the test split has only 372 photos,
so one run's last-epoch accuracy moves by a few points from seed to seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.analysis.metrics import image_psnr as psnr
from unlearnable.analysis.metrics import image_ssim as ssim
from unlearnable.app.owner import protect_folder, scan
from unlearnable.attacks.multiscale import STRENGTHS, class_kernels
from unlearnable.data.imagefolder import load_imagefolder
from unlearnable.data.photos import read_photo
from unlearnable.training.trainer import TrainConfig, resolve_recipe, train


def done(results: Path) -> dict[str, dict]:
    if not results.exists():
        return {}
    return {r["name"]: r for r in map(json.loads, results.read_text().splitlines())}


def record(results: Path, entry: dict) -> None:
    with open(results, "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


def visibility(src: Path, pub: Path, limit: int) -> dict:
    listing = scan(src)
    key = json.loads((pub.parent / f"{pub.name}.key.json").read_text())
    out = {f["source"]: f["published"] for f in key["files"]}
    ps, ss = [], []
    for rel, _ in listing.files[:: max(1, len(listing.files) // limit)][:limit]:
        a = read_photo(src / rel).pixels
        b = read_photo(pub / out[rel]).pixels
        ps.append(psnr(a, b))
        ss.append(ssim(a, b))
    return {"psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps)}


def scheme_b_visibility(src: Path, limit: int, strength: str = "mid") -> dict:
    """Scheme b: blur at native resolution with the class kernel enlarged by short side / 32."""
    listing = scan(src)
    kernels = class_kernels(len(listing.classes), STRENGTHS[strength], 0)
    ps, ss = [], []
    for rel, c in listing.files[:: max(1, len(listing.files) // limit)][:limit]:
        a = read_photo(src / rel).pixels
        x = torch.from_numpy(a).permute(2, 0, 1)[None]
        scale = min(a.shape[:2]) / 32
        k = kernels[c].shape[0]
        size = int(round(k * scale)) | 1
        big = F.interpolate(
            torch.from_numpy(kernels[c])[None, None], size=(size, size), mode="bilinear", align_corners=False
        )[0, 0]
        big = big / big.sum()
        p = size // 2
        y = F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), big.expand(3, 1, size, size).contiguous(), groups=3)
        b = y[0].permute(1, 2, 0).clamp(0, 1).numpy()
        ps.append(psnr(a, b))
        ss.append(ssim(a, b))
    return {"psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps)}


def accuracy(train_root: Path, test_root: Path, size: int, out: Path, epochs: int, seed: int = 0) -> dict:
    train_set = load_imagefolder(train_root, "train", str(train_root), image_size=size)
    test_set = load_imagefolder(test_root, "test", str(test_root), image_size=size)
    config = TrainConfig(
        out=str(out),
        model="small",
        recipe=resolve_recipe("quick", epochs=epochs, batch_size=64),
        device="cpu",
        seed=seed,
    )
    t = time.perf_counter()
    result = train(config, train_set, test_set, resume=(out / "checkpoint.pt").exists(), progress=False)
    return {
        "test_acc_last": result["final"]["test_acc_last"],
        "test_acc_best": result["final"]["test_acc_best"],
        "train_acc_last": result["epochs"][-1]["train_acc"],
        "seconds": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="collection root with train/ and test/")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    parser.add_argument("--strengths", default="mid,low,high")
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--visibility-images", type=int, default=200)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--seeds", default="0", help="training seeds (comma-separated): one run per seed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results.jsonl"
    finished = done(results)
    source = args.data / "train"
    variants = [(s, "same") for s in args.strengths.split(",")] + [("mid", "png")]
    for strength, fmt in variants:
        pub = args.work / f"pub-{strength}-{fmt}"
        if not pub.exists():
            t = time.perf_counter()
            protect_folder(source, pub, strength=strength, fmt=fmt, progress=False)
            record(results, {"name": f"protect {strength} {fmt}", "seconds": round(time.perf_counter() - t, 1)})
        name = f"visibility {strength} {fmt}"
        if name not in finished:
            record(results, {"name": name, **visibility(source, pub, args.visibility_images)})
    if "visibility scheme-b mid" not in finished:
        record(results, {"name": "visibility scheme-b mid", **scheme_b_visibility(source, 20)})
    if args.skip_training:
        return
    runs = [("clean", source)] + [(f"{s} {f}", args.work / f"pub-{s}-{f}") for s, f in variants]
    for seed in map(int, args.seeds.split(",")):
        for size in map(int, args.resolutions.split(",")):
            for label, root in runs:
                name = f"train {label} {size}" + (f" seed {seed}" if seed else "")
                if name in finished:
                    continue
                out = args.work / "runs" / name.replace(" ", "-")
                record(results, {"name": name, **accuracy(root, args.data, size, out, args.epochs, seed)})


if __name__ == "__main__":
    main()
