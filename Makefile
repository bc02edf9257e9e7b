# The two commands a new user needs: `make demo` and `make test`.
# Each creates or reuses .venv (scripts/env.sh) before running.
PY = $(shell bash scripts/env.sh)

.PHONY: demo test test-quick env
env:
	@bash scripts/env.sh >/dev/null

demo:
	$(PY) -m igoas demo --out runs/demo

test:
	$(PY) -m pytest

test-quick:
	$(PY) -m pytest -m "not slow"
