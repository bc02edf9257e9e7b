#!/usr/bin/env bash
# Reproduce one of the paper's tables on real data (GPU recommended):
#   scripts/reproduce.sh table1 /path/to/datasets [key=value ...]
# Trains the table's preset(s) under runs/reproduce/ (an interrupted run continues where
# it stopped) and prints the run's numbers beside the published ones. See docs/REPRODUCE.md.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 table1|table2|table3 DATA_ROOT [key=value ...]" >&2
  exit 2
fi
table=$1; root=$2; shift 2
py="$(bash "$(dirname "$0")/env.sh")"
exec "$py" -m igoas reproduce "$table" --root "$root" --out runs/reproduce "$@"
