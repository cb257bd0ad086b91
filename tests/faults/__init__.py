"""A fault campaign: bad inputs and faults tried on the tiny preset as a careless or hostile user would.

Every case runs in isolation (its own temporary folder and `TSPIN_TRL_CACHE`; a subprocess where a crash, a SIGKILL, a
file-size limit, a full disk, another user or a second concurrent run is involved) and is classified automatically:

- `clear error`: raised before any compute is wasted, the message names the field or file (checked on its text);
- `survived, nothing lost`: the run completed or resumed, and where that applies its final parameters equal those of
  an uninterrupted run with the same settings (compared to `TOL`);
- `warned and recovered`: as above, and a warning of `tspin_trl` said what was ignored or taken over;
- `DEFECT`: a crash with an unclear message, a hang (every case has a timeout), or a silently wrong result.

    python -m tests.faults            # every case, writes bench/results/faults.json (the results folder)
    python -m tests.faults --quick    # a subset of every category (the slow tier runs it: tests/faults/test_faults.py)
    python -m tests.faults --only resume --out /tmp/x.json
    python -m tests.faults --table bench/results/faults.json   # the results as markdown tables

Modules: `harness` (the reference run, outcomes, classification, the case registry, templates and baselines),
`workers` (a run in a subprocess with a fault injected), `campaign` (running the cases, the JSON, the tables), and one
module of cases per category: `settings`, `inputs`, `identity`, `run_files`, `proto_cache`, `checkpoints`,
`interrupts`, `kills`, `disk`, `concurrency`, `vllm_server`, `scorers`.
"""

import os
import warnings


# Importing the campaign sets the environment its runs assume; it must happen before torch is imported. libgomp
# threads spin for a while at every barrier: on a machine where other processes also run, passive waiting keeps a tiny
# step from becoming many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DATASETS_VERBOSITY", "error")

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
