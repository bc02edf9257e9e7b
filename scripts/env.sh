#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print its python.
# The environment is rebuilt only when pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${IGOAS_VENV:-$root/.venv}"
stamp="$venv/.igoas-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
  echo "[env] creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[env] installing igoas and its test dependencies into $venv (first run only)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2 || true
  # torch and torchvision first, at versions pip can take from the local wheel cache when present.
  "$venv/bin/python" -m pip install -q "torch>=2.5" "torchvision>=0.20" >&2
  "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
