#!/usr/bin/env bash
# The ablation study of docs/ablation.md, start to finish and resumable: run it again (in
# a later session too) and it continues where it stopped. Pretraining first (cached in
# runs/pretrain/synthetic_pretrain), then the baseline and IGOAS for every seed, then every
# other arm and seed; the small per-run records
# and the table and figures go to docs/ablation/study (commit them), the checkpoints and
# logs to runs/study.
#
#   scripts/study.sh                      # foreground
#   setsid nohup nice -n 10 scripts/study.sh > runs/study.log 2>&1 & echo $! > runs/study.pid
#
# PYTHON picks the interpreter (default: python); WAIT_PID, when set, is a process (an
# earlier pretraining) to wait for before starting, so two runs never share a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [[ -n "${WAIT_PID:-}" ]]; then
    while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 60; done
fi
"$PYTHON" -m igoas pretrain --out runs/pretrain/synthetic_pretrain
# The study's question first: the baseline and IGOAS for every seed (their bootstrap), then
# the other arms. The order changes no run: each is seeded by its own seed alone.
"$PYTHON" -m igoas ablation --seeds 3 --methods baseline igoas --out runs/study --records docs/ablation/study "$@"
"$PYTHON" -m igoas ablation --seeds 3 --out runs/study --records docs/ablation/study "$@"
