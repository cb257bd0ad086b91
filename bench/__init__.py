"""The measurements of tspin-trl: speed and memory against TRL's DPOTrainer used as SPIN (on identical models, data and
lengths), the DPO contract probes, the paper's reproduction, and the GPU scripts. `bench/README.md` lists every script,
what it measures, its command, the page that shows it and where its data goes (`bench/results/`).

Scripts run as `python bench/<script>.py` or `python -m bench.<script>` (`--help` for their flags). Their building
blocks, one job per module:

- `models`: models built from configs (no download) and the matching one-character-per-token tokenizer;
- `data`: synthetic prompts and responses of realistic lengths;
- `trainers`: both contenders' trainers on the same settings, pre-collated batches, one real optimisation step;
- `generation`: SPIN's generation loop and forced response lengths;
- `timing`: alternated timing and its summaries;
- `memory`: peak tensor memory and resident set size;
- `machine`: the machine and library versions a result was measured on;
- `report`: tables, verdicts and result files;
- `cli`: what every script's `main` shares (CPU flags, run, report, `--json`).
- `contract`: what `dpo_contract.py` and `sft_contract.py` share (probes, running them, the JSON, the page's table).

Importing `bench` sets the environment the measurements assume; it must happen before torch is imported.
"""

import os
import warnings


# libgomp threads spin for a while at every barrier: on a machine where other processes also run (2 cores shared),
# that made a tiny training step 50x slower (570 ms instead of 11 ms). Passive waiting costs nothing measurable when
# the cores are free. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DATASETS_VERBOSITY", "error")

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
