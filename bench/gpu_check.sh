#!/usr/bin/env bash
# GPU check, about 5-8 minutes on one H200: ResNet-18 with the paper recipe for a couple of epochs per
# Table-1 condition (clean, CUDA, CUDA+AT L∞ 4/255 10 steps, CUDA+RSK+FF) on the CIFAR-10 JPEG copy;
# prints epoch time, images/s and test accuracy per run; then the ImageNet-style pipeline (a synthetic
# memory-mapped 224² store streamed into torchvision's ResNet-18): images/s and data-loading share.
#
#   bash bench/gpu_check.sh [ARCHIVE] [EPOCHS]     (defaults: ../shared/data/cifar10-jpeg.tar.gz, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=${1:-../shared/data/cifar10-jpeg.tar.gz}
EPOCHS=${2:-2}
OUT=${GPU_CHECK_OUT:-out/gpu_check}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
python -m unlearnable reproduce --dataset cifar10 --source "$ARCHIVE" --epochs "$EPOCHS" --device cuda --out "$OUT"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1], "runs").iterdir()):
    r = json.loads((run / "results.json").read_text())
    for e in r["epochs"]:
        print(f"{run.name:<12} epoch {e['epoch']}: {e['seconds']:6.1f} s  {e['images_per_s']:8.0f} img/s  test {e['test_acc']:.2f}%")
PY
python bench/bench_imagenet_pipeline.py --images 8192 --batch 256 --steps 20 --device cuda
