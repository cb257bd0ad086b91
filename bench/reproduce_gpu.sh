#!/usr/bin/env bash
# The GPU recipe of docs/reproduction.md on one H100/H200 with no network, in under 9 minutes: the page's design (rows,
# seeds, rules, verdicts) at a larger scale: a 26M-parameter Llama built from a config, one warm start per seed trained
# on the device, then the planned runs in the page's order (preconditions first), 8 runs at once on the one GPU
# (python bench/reproduce.py --gpu); runs that would end after the deadline are listed as not run. Writes
# OUT/reproduction.md and OUT/figures/ (3 files); the work folder (models, caches) stays in /tmp.
#
#   bash bench/gpu_wheels.sh                    # here: trl, datasets, transformers wheels into .whl/ (15 MB)
#   bash bench/reproduce_gpu.sh OUT [ARGS...]   # there, from the repository root, with .whl carried along
#
# ARGS go to bench/reproduce.py (e.g. --smoke for the code path in about a minute, --deadline-min 6).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash bench/reproduce_gpu.sh OUT [ARGS...]}"
shift
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export MPLBACKEND=Agg
python=python3
if ! $python -c "import trl, datasets, transformers, sys; sys.exit(transformers.__version__ != '5.24.0')" 2>/dev/null; then
    # The image has torch, accelerate, peft; the carried wheels add trl, datasets and the pinned transformers.
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ here: run 'bash bench/gpu_wheels.sh' and carry .whl" >&2; exit 2; }
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # tspin_trl from this checkout (no build step, no network)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 8.8 minutes at most: runs start until 7 minutes (reproduce.py's --gpu deadline), stop at 7.5, then the page.
timeout --signal=INT --kill-after=10 528 \
    $python bench/reproduce.py --gpu --out "$out" --work-dir /tmp/reproduce-work-gpu "$@"
