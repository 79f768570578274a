#!/usr/bin/env bash
# The prepared GPU check (issue #17): one run on a CUDA machine that has torch but no network.
#
#   scripts/gpu_check.sh WHEELS_DIR [OUT_DIR]
#
# WHEELS_DIR holds the wheels that machine lacks, downloaded beforehand on a machine with network:
#
#   pip download --no-deps -d wheels/ ultralytics ultralytics-thop ultralytics-platform polars polars-runtime-32 \
#       segmentation-models-pytorch pycocotools safetensors timm huggingface_hub
#   (ultralytics' trainer needs polars; --python-version/--platform pick wheels for another machine's Python)
#   (add onnx onnxruntime-gpu / openvino if the GPU machine lacks them; every wheel must match its Python)
#
# A wheel too large to carry there (polars-runtime-32 is ~54 MB) can go in WHEELS_DIR as NAME.tar.xz of
# its unpacked contents (`mkdir x && cd x && unzip ../W.whl && tar cJf ../W.tar.xz .`, ~33 MB): it is
# unpacked into the same place. GPU_CHECK_STEPS=a,b runs only the steps so named (data runs when a
# finetune step is named), to rerun what failed when device time is short.
#
# It installs those wheels under OUT_DIR/site (the machine's own packages are left as they are) and runs
# cnnkit from this checkout, then, each step under a time limit and the whole in about 8 minutes: the tests
# marked `gpu`; predict on every task with --device cuda, in fp32 and --half; one short `finetune --amp`
# per task on tiny synthetic data; `cnnkit benchmark` on the GPU (torch fp32 vs auto, which stays on torch
# there; then torch fp16). It prints one table of step, status and seconds, and leaves every log and JSON
# under OUT_DIR (default: $OUT, else ./gpu-check). Exit status: the number of failed steps.
set -uo pipefail

WHEELS=${1:?usage: scripts/gpu_check.sh WHEELS_DIR [OUT_DIR]}
OUT=${2:-${OUT:-gpu-check}}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$REPO"

export YOLO_OFFLINE=true YOLO_AUTOINSTALL=false HF_HUB_OFFLINE=1
export YOLO_CONFIG_DIR="$OUT/yolo" CNNKIT_CACHE="$OUT/cache" MPLBACKEND=Agg
export PYTHONPATH="$REPO:$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

ROWS=()
FAILED=0
ONLY=${GPU_CHECK_STEPS:-}
step() {  # step NAME LIMIT_S command...: run, time, log to $OUT/NAME.log, remember the row
    local name=$1 limit=$2
    shift 2
    case "$name" in install-wheels | imports | cuda) ;;  # always: the rest depends on them
    *) if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]] && ! [[ $name == data && $ONLY == *finetune* ]]; then return 0; fi ;;
    esac
    local t0=$SECONDS status
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then status=ok; else status="FAILED($?)"; FAILED=$((FAILED + 1)); fi
    ROWS+=("$(printf '%-28s %-12s %5ss' "$name" "$status" $((SECONDS - t0)))")
    echo "${ROWS[-1]}" >&2
}

step install-wheels 180 bash -c '
    "$0" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$1/site" "$2"/*.whl || exit 1
    for packed in "$2"/*.tar.xz; do [ ! -e "$packed" ] || tar xJf "$packed" -C "$1/site" || exit 1; done' "$PY" "$OUT" "$WHEELS"
step imports 60 "$PY" -c "import cnnkit, ultralytics, segmentation_models_pytorch, pycocotools; print(cnnkit.__version__, ultralytics.__version__)"
step cuda 60 "$PY" -c "import torch, sys; print(torch.__version__, torch.cuda.get_device_name(0)); sys.exit(not torch.cuda.is_available())"
step pytest-gpu 180 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ --junitxml="$OUT/pytest-gpu.xml"

DATA="$OUT/data"
step data 120 bash -c "
    $PY -m cnnkit data shapes '$DATA/cls' --layout imagefolder --n 96 --imgsz 64 --exist-ok &&
    $PY -m cnnkit data shapes '$DATA/det' --layout yolo --n 64 --imgsz 256 --exist-ok &&
    $PY -m cnnkit data shapes '$DATA/seg' --layout masks --n 48 --imgsz 128 --exist-ok &&
    $PY -m cnnkit data shapes '$DATA/ins' --layout coco --n 32 --imgsz 128 --exist-ok"

for task in classify detect segment instance; do
    step "predict-$task-fp32" 90 "$PY" -m cnnkit "$task" samples --device cuda -f jsonl -o "$OUT/predict-$task-fp32.jsonl"
    step "predict-$task-half" 90 "$PY" -m cnnkit "$task" samples --device cuda --half -f jsonl -o "$OUT/predict-$task-half.jsonl"
done

step finetune-classify-amp 120 "$PY" -m cnnkit finetune "$DATA/cls" --task classify --model resnet18 --no-pretrained --epochs 1 --amp --device cuda --save-dir "$OUT/runs/cls" --exist-ok
step finetune-detect-amp 180 "$PY" -m cnnkit finetune "$DATA/det/data.yaml" --task detect --epochs 1 --amp --device cuda --imgsz 256 --save-dir "$OUT/runs/det" --exist-ok
step finetune-segment-amp 120 "$PY" -m cnnkit finetune "$DATA/seg" --task segment --epochs 1 --amp --device cuda --save-dir "$OUT/runs/seg" --exist-ok
step finetune-instance-amp 150 "$PY" -m cnnkit finetune "$DATA/ins" --task instance --epochs 1 --amp --device cuda --save-dir "$OUT/runs/ins" --exist-ok

MODELS=(shapes-cnn shapes-yolov8n shapes-unet shapes-deeplabv3plus shapes-maskrcnn)
step benchmark-gpu 200 "$PY" -m cnnkit benchmark "${MODELS[@]}" --device cuda \
    --backend torch --backend auto --images 128 --batch-size 32 --seconds 3 -f json -o "$OUT/benchmark-gpu.json"
step benchmark-gpu-half 150 "$PY" -m cnnkit benchmark "${MODELS[@]}" --device cuda --half \
    --backend torch --images 128 --batch-size 32 --seconds 3 -f json -o "$OUT/benchmark-gpu-half.json"

echo
echo "cnnkit GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null || echo 'no CUDA'))"
printf '%s\n' "${ROWS[@]}"
"$PY" - "$OUT/benchmark-gpu.json" "$OUT/benchmark-gpu-half.json" <<'EOF'
import json, os, sys
keys = ("model", "backend", "runtime", "precision", "e2e_ips", "forward_ips", "p50_ms", "p95_ms", "peak_mb", "load_s")
print(" ".join(f"{k:>14}" for k in keys))
for path in sys.argv[1:]:
    for r in json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else []:
        print(" ".join(f"{str(r[k]):>14}" for k in keys))
EOF
exit "$FAILED"
