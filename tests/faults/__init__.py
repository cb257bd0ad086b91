"""A fault campaign: bad inputs and faults tried on the tiny preset as a careless or hostile user would.

Every case runs in isolation (its own temporary folder and `TSPIN_TRL_CACHE`; a subprocess where a crash, a SIGKILL, a
file-size limit, a full disk, another user or a second concurrent run is involved) and is classified automatically:

- `clear error`: raised before any compute is wasted, the message names the field or file (checked on its text);
- `survived, nothing lost`: the run completed or resumed, and where that applies its final parameters equal those of
  an uninterrupted run with the same settings (compared to `TOL`);
- `warned and recovered`: as above, and a warning of `tspin_trl` said what was ignored or taken over;
- `DEFECT`: a crash with an unclear message, a hang (every case has a timeout), or a silently wrong result.

    python -m bench.faults            # every case, writes bench/results/faults.json
    python -m bench.faults --quick    # a subset of every category
    python -m bench.faults --only resume --out /tmp/x.json
    python -m bench.faults --table bench/results/faults.json   # the results as markdown tables

Modules: `harness` (the reference run, outcomes, classification, the case registry, templates and baselines),
`workers` (a run in a subprocess with a fault injected), `campaign` (running the cases, the JSON, the tables), and one
module of cases per category: `settings`, `inputs`, `identity`, `run_files`, `proto_cache`, `checkpoints`,
`interrupts`, `kills`, `disk`, `concurrency`, `vllm_server`, `scorers`.
"""
