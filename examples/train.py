"""Train a model with T-SPIN self-play: the `tspin-trl train` script, as a file you can copy and edit.

With no arguments it runs the offline demo (examples/configs/demo.yaml): SmolLM2-135M-Instruct, installed from PyPI as
a GGUF file, on a quarter of a generated verifiable-instruction task, scored on held-out prompts before training and
after every self-play iteration. Otherwise it takes every option of `tspin-trl train` (TRL's flags, `--config`).

```bash
accelerate launch examples/train.py                                            # the demo (`make demo`)
accelerate launch examples/train.py --config examples/configs/tiny.yaml        # seconds, the tiny preset
accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/train.py \\
    --config examples/configs/paper_zephyr.yaml                                # the paper's recipe, 8 GPUs
```
"""

import sys
from pathlib import Path

from tspin_trl.scripts.train import main, make_parser


DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


if __name__ == "__main__":
    if len(sys.argv) == 1:  # the embedded default
        sys.argv += ["--config", str(DEFAULT_CONFIG)]
    script_args, training_args, model_args, dataset_args, self_play_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args, dataset_args, self_play_args)
