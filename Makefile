# Two entry points, both safe on a fresh machine (they create the environment first):
#   make demo   the main job on the embedded default data (tiny preset, CPU)
#   make test   the test suite (what CI runs)
# CPU torch is installed first on purpose: a bare `torch` requirement pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.rorem-installed
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: env env-ls env-browser demo test test-fast lint clean-scratch

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
	$(VENV)/bin/python -c "import torch, diffusers, prefect, dvc, label_studio_sdk, wandb"
	touch $(STAMP)

env: $(STAMP)

env-ls:
	bash scripts/labelstudio_env.sh

env-browser:
	bash scripts/install_chromium.sh

demo: env env-ls
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/rorem demo

lint: env
	$(VENV)/bin/ruff check .

# two xdist workers, a file per work unit, the slow files first (tests/conftest.py); one torch thread per
# process so the two never oversubscribe the cores (a resumed run is compared at the same thread count)
test: env env-ls env-browser lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile \
		--no-loadscope-reorder --timeout=1800 --durations=25 tests

test-fast: env
	WANDB_MODE=offline $(VENV)/bin/python -m pytest -q -m "not slow and not integration and not browser" tests

clean-scratch:
	rm -rf .rorem/cache .rorem/work

# The SDXL preset rehearsed on CPU (docs/sdxl.md): builds the full-size SDXL-inpainting stand-in (random
# weights) if missing, then one whole `rorem round --annotators simulated` with params.sdxl-rehearsal.yaml in
# a scratch copy of the project; prints wall time, peak RSS per stage and the disk the round takes. Needs ~17 GiB RAM, ~4 GB disk.
.PHONY: rehearsal
rehearsal: env env-ls
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=disabled $(VENV)/bin/python benchmarks/bench_sdxl_rehearsal.py --out .rorem/bench_sdxl_rehearsal.json
