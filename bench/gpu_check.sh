#!/usr/bin/env bash
# The GPU check: every GPU path of the trainer in one run of at most ~10 minutes on one H200, from a
# fresh clone with nothing but the repository (and, optionally, the CIFAR-10 JPEG archive carried at
# data-cache/cifar10-jpeg.tar.gz, a path .gitignore ignores).
#
#   bash bench/gpu_check.sh                  # on a GPU machine
#   bash bench/gpu_check.sh --device cpu     # dry run: the same steps, tiny, on the CPU (~5 min on 2 cores)
#   bash bench/gpu_check.sh --archive PATH   # another copy of the CIFAR-10 JPEG archive
#
# Steps (each prints one "== ..." header; the script stops at the first failure, exit status 1):
#   1. the Python: .venv/bin/python when it imports torch; else python3 when it has torch, torchvision,
#      numpy, pillow, tqdm, matplotlib and pytest (a GPU image; the project runs from src/ via PYTHONPATH,
#      nothing is installed); else the venv is made with `make .venv/.installed` (needs the network).
#   2. data: the archive when present, else a synthetic 10-class dataset made on the spot (said so:
#      its accuracies mean nothing). On the CPU a small stratified subset of either.
#   3. the GPU-only tests (pytest -m cuda: the tests skipped without CUDA).
#   4. `unlearnable reproduce` for one epoch (data prep, the CUDA poison, the four Table-1 conditions).
#   5. every defense and step hook through the trainer, one short epoch each,
#      bf16 autocast and channels_last on.
#   6. resume: a run stopped by SIGINT after its first checkpoint; a fresh start in its folder must be
#      refused (exit 2), --resume must finish it; compared with an uninterrupted run (bit-identical on
#      the CPU; on a GPU the kernels are nondeterministic, so only the kept epoch must be identical).
#   7. data placement: the same run with the images resident on the device and streamed from the
#      memory-mapped dataset (bit-identical on the CPU).
#   8. throughput of the small CNN and ResNet-18 through the trainer (images/s) and the estimated
#      time of Table 1 (4 conditions × 60 epochs of CIFAR-10 with ResNet-18).
# Every run writes to a fresh folder out/gpu-check-<seconds since 1970>, so no number is old and no
# run resumes an earlier one.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
ARCHIVE=data-cache/cifar10-jpeg.tar.gz
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --archive) ARCHIVE=$2; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (expected --device cuda|cpu, --archive PATH)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu_check.sh: --device must be cpu or cuda (got $DEVICE)" >&2; exit 2 ;; esac

START=$(date +%s)
OUT=out/gpu-check-$START
while [ -e "$OUT" ]; do START=$((START + 1)); OUT=out/gpu-check-$START; done
mkdir -p "$OUT"
export UNLEARNABLE_CACHE="$PWD/$OUT/cache" UNLEARNABLE_DATA="$PWD/$OUT/data-root" PYTHONUNBUFFERED=1
step() { echo; echo "== $* ($(( $(date +%s) - START )) s)"; }
fail() { echo "gpu_check.sh: FAILED: $*" >&2; exit 1; }

step "1. python"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && python3 -c "import torch, torchvision, numpy, PIL, tqdm, matplotlib, pytest" 2>/dev/null; then
    PY=python3
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    make .venv/.installed
    PY=.venv/bin/python
fi
UL=("$PY" -m unlearnable)
"$PY" - "$DEVICE" <<'PY'
import sys, torch, unlearnable
device = sys.argv[1]
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, unlearnable {unlearnable.__version__}")
print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a dry run")
    print(f"GPU {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}")
PY

step "2. data"
"$PY" - "$DEVICE" "$ARCHIVE" "$OUT/source" <<'PY'
import sys
from pathlib import Path
import torch
from unlearnable.data import ImageDataset, load_dataset, save_dataset, stratified_subset

device, archive, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
train_per_class, test_per_class = (None, None) if device == "cuda" else (60, 20)
if archive.is_file():
    if device == "cuda":  # the whole archive: reproduce reads it itself
        out.with_suffix(".spec").write_text(str(archive.resolve()))
        print(f"CIFAR-10 from {archive}")
        sys.exit()
    train, test = (stratified_subset(load_dataset(str(archive), split), n) for split, n in
                   (("train", train_per_class), ("test", test_per_class)))
    print(f"CIFAR-10 from {archive}: a subset of {len(train)} training and {len(test)} test images")
else:
    # Ten classes told apart by colour and the orientation of faint stripes, under noise.
    def synthetic(per_class: int, seed: int) -> ImageDataset:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(10).repeat_interleave(per_class)
        n = len(labels)
        rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        colour = torch.stack([(labels * 37) % 256, (labels * 91) % 256, (labels * 151) % 256], 1).float()
        wave = torch.sin(torch.where((labels % 2).bool().view(n, 1, 1), cols, rows) * 0.8
                         + torch.rand(n, 1, 1, generator=g) * 6.3)
        noise = torch.randn(n, 3, 32, 32, generator=g) * 40
        images = 0.5 * colour.view(n, 3, 1, 1) + 64 + 30 * wave.unsqueeze(1) + noise
        return ImageDataset(images.clamp(0, 255).round().to(torch.uint8), labels, [f"class{i}" for i in range(10)],
                            {"source": {"spec": "synthetic", "kind": "synthetic"}})
    sizes = (500, 100) if device == "cuda" else (train_per_class, test_per_class)
    train, test = synthetic(sizes[0], 0), synthetic(sizes[1], 1)
    print(f"NO ARCHIVE at {archive}: SYNTHETIC data instead ({len(train)} training, {len(test)} test images); "
          "its accuracies say nothing about CIFAR-10")
out.mkdir(parents=True, exist_ok=True)
save_dataset(out, train, test)
out.with_suffix(".spec").write_text(str(out.resolve()))
PY
SOURCE=$(cat "$OUT/source.spec")
if [ -f "$ARCHIVE" ]; then echo "CIFAR-10 ($ARCHIVE)" > "$OUT/data.txt"; else echo "SYNTHETIC (no $ARCHIVE)" > "$OUT/data.txt"; fi

# Sizes: the defense runs take PER_CLASS images of each class; the resume and placement runs take
# SUBSET (all the data on a GPU, so that an epoch lasts long enough to be interrupted and timed).
if [ "$DEVICE" = cuda ]; then
    PER_CLASS=(200 100); SUBSET=(); MODEL_TABLE=resnet18; RECIPE_TABLE=paper; EPOCHS_RESUME=4; EXACT=0
else
    PER_CLASS=(30 10); SUBSET=(--train-per-class 30 --test-per-class 10); MODEL_TABLE=small; RECIPE_TABLE=quick
    EPOCHS_RESUME=3; EXACT=1
fi

step "3. GPU-only tests"
if [ "$DEVICE" = cuda ]; then
    "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests
else
    "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests | tail -n 15  # CUDA ones skip here
fi

step "4. reproduce, one epoch ($MODEL_TABLE, $RECIPE_TABLE recipe)"
"${UL[@]}" reproduce --dataset cifar10 --source "$SOURCE" --epochs 1 --model "$MODEL_TABLE" --recipe "$RECIPE_TABLE" \
    --device "$DEVICE" --out "$OUT/reproduce"
DATA="$OUT/reproduce/data/cuda"
[ -d "$DATA" ] || fail "reproduce did not save the poisoned data at $DATA"

step "5. every defense and step hook, one short epoch each, bf16 autocast + channels_last"
"$PY" - "$DEVICE" "$DATA" "$OUT/defenses" "${PER_CLASS[0]}" "${PER_CLASS[1]}" <<'PY'
import sys, time
from pathlib import Path
from unlearnable.data import load_saved, stratified_subset
from unlearnable.defenses import defense_kinds
from unlearnable.training.trainer import TrainConfig, resolve_recipe, train

device, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
train_set = stratified_subset(load_saved(data), int(sys.argv[4]))
test_set = stratified_subset(load_saved(data, "test"), int(sys.argv[5]))
steps = {"at-linf": {"steps": 2}, "at-l2": {"steps": 2}, "dat": {"steps": 2}, "ueraser": {"draws": 2},
         "deconv": {"kernel_size": 3}, "deconv-spectrum": {"kernel_size": 3}}  # k = 3: no kernel-size search
runs = [(name, name, steps.get(name, {})) for names in defense_kinds().values() for name in names]
recipe = resolve_recipe("quick", epochs=1, batch_size=64, test_batch_size=256)
print(f"{len(runs)} runs on {len(train_set)} training images ({data})")
few = stratified_subset(train_set, min(50, int(sys.argv[4])))  # the deconv estimators run on the CPU
for label, defense, options in runs:
    start = time.perf_counter()
    r = train(TrainConfig(out=str(out / label), model="small", recipe=recipe, defense=defense, defense_options=options,
                          device=device, amp=True, channels_last=True),
              few if defense.startswith("deconv") else train_set, test_set, progress=False)
    assert r["status"] == "complete" and r["config"]["amp"] is True and r["config"]["channels_last"] is True
    e = r["epochs"][-1]
    print(f"  {label:<16} loss {e['train_loss']:6.3f}  test {e['test_acc']:6.2f}%  {e['images_per_s']:8.0f} img/s  "
          f"{time.perf_counter() - start:5.1f} s")
PY

step "6. resume after an interruption (SIGINT after the first checkpoint)"
RUN=$OUT/resume/interrupted
TRAIN_ARGS=(train --train "$DATA" ${SUBSET[@]+"${SUBSET[@]}"} --model small --recipe quick --epochs "$EPOCHS_RESUME"
            --batch-size 64 --device "$DEVICE" --defense rsk+ff)
# Background jobs of a script ignore SIGINT; the CLI is started with Python's own handler back.
CLI=("$PY" -c 'import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)
from unlearnable.app.cli import main; sys.exit(main(sys.argv[1:]))')
"${CLI[@]}" "${TRAIN_ARGS[@]}" --out "$RUN" > "$OUT/resume.log" 2>&1 &
PID=$!
for _ in $(seq 1200); do [ -f "$RUN/results.json" ] && break; kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
kill -INT "$PID" 2>/dev/null || true
STATUS=0; wait "$PID" || STATUS=$?
tail -n 2 "$OUT/resume.log"
[ "$STATUS" -eq 130 ] || fail "the interrupted run exited with $STATUS, not 130 (see $OUT/resume.log)"
cp "$RUN/results.json" "$OUT/resume/kept.json"
STATUS=0; "${UL[@]}" "${TRAIN_ARGS[@]}" --out "$RUN" > "$OUT/fresh.log" 2>&1 || STATUS=$?
cat "$OUT/fresh.log"
[ "$STATUS" -eq 2 ] || fail "a fresh run in the interrupted run's folder was not refused (exit $STATUS)"
"${UL[@]}" "${TRAIN_ARGS[@]}" --out "$RUN" --resume
"${UL[@]}" "${TRAIN_ARGS[@]}" --out "$OUT/resume/straight"
"$PY" - "$OUT/resume" "$EXACT" <<'PY'
import json, sys
from pathlib import Path
root, exact = Path(sys.argv[1]), sys.argv[2] == "1"
kept = json.loads((root / "kept.json").read_text())["epochs"]
resumed = json.loads((root / "interrupted" / "results.json").read_text())
straight = json.loads((root / "straight" / "results.json").read_text())
assert resumed["status"] == "complete" and len(resumed["epochs"]) == len(straight["epochs"])
assert resumed["epochs"][:len(kept)] == kept, "the epochs kept at the interruption changed"
for a, b in zip(resumed["epochs"], straight["epochs"]):
    print(f"  epoch {a['epoch']}: resumed test {a['test_acc']:6.2f}% loss {a['train_loss']:.6f}   "
          f"uninterrupted test {b['test_acc']:6.2f}% loss {b['train_loss']:.6f}")
gap = abs(resumed["final"]["test_acc_last"] - straight["final"]["test_acc_last"])
if exact:
    assert [(e["train_loss"], e["test_acc"]) for e in resumed["epochs"]] == \
           [(e["train_loss"], e["test_acc"]) for e in straight["epochs"]], "resume is not bit-identical on the CPU"
    print(f"  kept {len(kept)} epoch(s); resumed == uninterrupted, bit for bit")
else:
    print(f"  kept {len(kept)} epoch(s); last-epoch accuracy gap {gap:.2f} points (GPU kernels are nondeterministic)")
PY

step "7. data placement: resident on the device vs streamed from the memory-mapped dataset"
for PLACEMENT in device stream; do
    "${UL[@]}" train --train "$DATA" ${SUBSET[@]+"${SUBSET[@]}"} --model small --recipe quick --epochs 1 \
        --batch-size 256 --device "$DEVICE" --data-placement "$PLACEMENT" --out "$OUT/placement/$PLACEMENT"
done
"$PY" - "$OUT/placement" "$EXACT" <<'PY'
import json, sys
from pathlib import Path
root, exact = Path(sys.argv[1]), sys.argv[2] == "1"
runs = {p: json.loads((root / p / "results.json").read_text()) for p in ("device", "stream")}
for p, r in runs.items():
    e = r["epochs"][-1]
    assert r["pipeline"]["data_placement"] == p, r["pipeline"]
    print(f"  {p:<7} {r['train_data']['num_images']} images  loss {e['train_loss']:.6f}  test {e['test_acc']:6.2f}%  "
          f"{e['images_per_s']:8.0f} img/s")
if exact:
    assert runs["device"]["epochs"][-1]["train_loss"] == runs["stream"]["epochs"][-1]["train_loss"], \
        "streamed and resident training differ on the CPU"
    print("  streamed == resident, bit for bit")
PY

step "8. throughput and the Table-1 estimate"
if [ "$DEVICE" = cpu ]; then  # the dry run's reproduce trained the small CNN: time ResNet-18 on a few batches too
    "${UL[@]}" train --train "$DATA" --train-per-class 13 --test-per-class 5 --model resnet18 --recipe paper \
        --epochs 1 --batch-size 64 --device cpu --out "$OUT/resnet18" > /dev/null 2>&1
fi
"$PY" - "$OUT" "$DEVICE" <<'PY'
import json, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]

def load(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())

rows = {path.name: load(path) for path in sorted((out / "reproduce" / "runs").iterdir())}
small = max((load(out / "placement" / p) for p in ("device", "stream")), key=lambda r: r["final"]["images_per_s"])
print(f"  small CNN  (train, bf16={small['config']['amp']}, channels_last): "
      f"{small['final']['images_per_s']:9.0f} images/s")
resnet = rows.get("clean") if rows.get("clean", {}).get("model", {}).get("name") == "resnet18" else load(out / "resnet18")
print(f"  ResNet-18  (train, bf16={resnet['config']['amp']}, channels_last): "
      f"{resnet['final']['images_per_s']:9.0f} images/s")
if rows["clean"]["model"]["name"] == "resnet18":
    total = 0.0
    for name, r in rows.items():
        e = r["epochs"][-1]
        epoch = e["seconds"] * 50000 / r["train_data"]["num_images"]
        total += 60 * epoch
        print(f"  {name:<12} {e['images_per_s']:8.0f} img/s, {e['seconds']:6.1f} s this epoch -> "
              f"60 epochs of 50,000 images ≈ {60 * epoch / 60:6.1f} min")
    print(f"  Table 1 on CIFAR-10 (4 conditions × 60 epochs, ResNet-18, paper recipe) ≈ {total / 3600:.2f} h on this {device}")
PY
echo
echo "gpu_check.sh: all checks passed on $DEVICE in $(( $(date +%s) - START )) s, data: $(head -c 300 "$OUT/data.txt") -> $OUT"
