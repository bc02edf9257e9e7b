#!/usr/bin/env bash
# The GPU check in one command, sized for a short lease (under 5 minutes in all): the training
# step (benchmarks/train_step.py) then inference (benchmarks/inference.py) on CUDA, each
# document rewritten in OUT_DIR after every measured path, each run's table in OUT_DIR/*.log.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]           # OUT_DIR default: $OUT, else runs/gpu_check
#   bash benchmarks/gpu_check.sh --smoke [OUT_DIR]   # the same code paths on the CPU, tiny sizes (a minute or two)
#
# igoas need not be installed (src/ goes on PYTHONPATH); where OmegaConf is missing, the
# wheels carried in .whl/ are installed into a scratch folder (docs/benchmarks.md, "GPU").
# Budgets, from each process's start: training 185 s (killed at 215 s), inference 50 s
# (killed at 70 s); a killed run keeps every path it finished in its JSON document.
set -u
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out_dir="${1:-${OUT:-}}"
if [ -n "$out_dir" ]; then mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)" || exit 2; fi
cd "$(dirname "$0")/.." || exit 2
out_dir="${out_dir:-$PWD/runs/gpu_check}"
python="${PYTHON:-python3}"
mkdir -p "$out_dir" || exit 2

if ! "$python" -c "import omegaconf" 2>/dev/null; then
    site=/tmp/igoas-site
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_check: OmegaConf is not installed and no wheels were carried in .whl/; see docs/benchmarks.md (GPU)" >&2
        exit 2
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
        || site="$(ls .whl/*.whl | tr '\n' ':')"  # pure-Python wheels also import straight from the zip files
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ "$smoke" = 1 ]; then
    train=(--device cpu --backbone resnet18 --batch 2 --height 64 --width 32 --repeats 1 --precisions fp32
           --compile both --compile-backend eager --budget-s 600)
    infer=(--device cpu --backbone resnet18 --height 64 --width 32 --images 4 --batch-size 2 --repeats 1
           --calibration-images 8 --pytorch-only --budget-s 600)
    train_limit=900 infer_limit=600
else
    train=(--device cuda --budget-s 185)
    infer=(--device cuda --pytorch-only --budget-s 50)
    train_limit=215 infer_limit=70
fi

limited() {  # limited SECONDS COMMAND...: stopped after SECONDS where coreutils' timeout exists
    if command -v timeout >/dev/null; then timeout -k 5 "$@"; else shift; "$@"; fi
}
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$out_dir/gpu.txt"
fi
limited "$train_limit" "$python" benchmarks/train_step.py "${train[@]}" --out "$out_dir" \
    2> >(tee "$out_dir/train_step.log" >&2) > "$out_dir/train_step.stdout"
train_status=$?
limited "$infer_limit" "$python" benchmarks/inference.py "${infer[@]}" --out "$out_dir" \
    2> >(tee "$out_dir/inference.log" >&2) > "$out_dir/inference.stdout"
infer_status=$?
echo "gpu_check: train_step exit $train_status, inference exit $infer_status (124: stopped by the time limit); results in $out_dir" >&2
[ "$train_status" = 0 ] && [ "$infer_status" = 0 ]
