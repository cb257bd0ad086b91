#!/usr/bin/env bash
# Prepare .whl/ (git-ignored) for the GPU machine, which reaches no network: the wheels its image lacks for
# bench/reproduce_gpu.sh. Its image has torch, accelerate, peft, tokenizers, safetensors, huggingface_hub, pyarrow,
# pandas, xxhash and fsspec, but not trl or datasets, and transformers 5.17 (this project pins 5.24).
#
#   bash bench/gpu_wheels.sh        # here, from the repository root; then carry ".whl" in the device call
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl trl==1.16.0 datasets==5.2.0 transformers==5.24.0 dill==0.4.1 multiprocess==0.70.19
du -sh .whl
ls .whl
