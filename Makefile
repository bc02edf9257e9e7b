# The two commands a new user needs: `make demo` and `make test`.
# Each creates or reuses .venv (scripts/env.sh) before running.
PY = $(shell bash scripts/env.sh)

.PHONY: demo serve test test-quick test-kernels bench env
env:
	@bash scripts/env.sh >/dev/null

demo:
	$(PY) -m igoas demo --out runs/demo

# The search page on the demo's model and its synthetic gallery (after `make demo`).
serve:
	$(PY) -m igoas serve runs/demo/checkpoints/best.pth --gallery data/synthetic --dataset synthetic

test:
	$(PY) -m pytest

test-quick:
	$(PY) -m pytest -m "not slow"

# The kernel-sensitive tests (model forwards, the pinned published forward) under ATen's
# AVX2 kernels (another set than the default on an AVX-512 machine) and with oneDNN off:
# results must not depend on this CPU's kernels.
KERNEL_TESTS = tests/model/test_fidelity.py tests/model/test_model.py
test-kernels:
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q $(KERNEL_TESTS)
	IGOAS_TEST_MKLDNN=0 $(PY) -m pytest -q $(KERNEL_TESTS)

# Speed and memory benchmarks: one JSON line each, appended to runs/benchmarks.jsonl.
bench:
	@mkdir -p runs
	$(PY) benchmarks/train_step.py | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/inference.py | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/formats.py $(if $(CKPT),--checkpoint $(CKPT),--smoke) | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/dataloading.py | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/evaluation.py | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/rerank.py | tee -a runs/benchmarks.jsonl
	$(PY) benchmarks/corruptions.py | tee -a runs/benchmarks.jsonl
