"""A small T-SPIN run on the tiny preset, launched by the multi-process and crash tests.

Writes a JSON result (losses, generation calls, every rank's synthetic responses, a parameter checksum) so the test
can compare runs. `--kill_after_chunks N` SIGKILLs the process after N chunks of iteration 1 are on disk.
"""

import argparse
import json
import os
import signal

import torch
from datasets import Dataset

from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl import generation as generation_module
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


def rows(n: int, pregenerated: bool) -> list[dict]:
    out = []
    for i in range(n):
        digits = [(i * 7 + k * 3) % 10 for k in range(3 + i % 4)]  # a spread of prompt lengths
        row = {
            "prompt": "sort: " + " ".join(map(str, digits)) + "\n",
            "completion": " ".join(map(str, sorted(digits))),
        }
        if pregenerated:
            row |= {"synthetic": " ".join(map(str, digits)), "proto": "0 " * (i % 3 + 1)}
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--num_prompts", type=int, default=12)
    parser.add_argument("--num_iterations", type=int, default=2)
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--generation_batch_size", type=int, default=2)
    parser.add_argument("--pregenerated", action="store_true")
    parser.add_argument("--save_strategy", default="no")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill_after_chunks", type=int, default=0)
    args = parser.parse_args()

    if args.kill_after_chunks:
        original_write = generation_module.ChunkStore.write
        written = []

        def write_then_maybe_die(self, chunk, items):
            original_write(self, chunk, items)
            if "iteration_1" in self.directory:
                written.append(chunk)
                if len(written) >= args.kill_after_chunks:
                    os.kill(os.getpid(), signal.SIGKILL)

        generation_module.ChunkStore.write = write_then_maybe_die

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    config = TSPINConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_train_batch_size,
        num_iterations=args.num_iterations,
        generation_batch_size=args.generation_batch_size,
        max_completion_length=8,
        max_length=48,
        learning_rate=1e-3,
        warmup_steps=0,
        beta_first_iteration=0.1,
        logging_steps=1,
        report_to=[],
        gradient_checkpointing=False,
        save_strategy=args.save_strategy,
        use_cpu=True,
        seed=0,
        dataloader_pin_memory=False,
    )
    trainer = TSPINTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(args.num_prompts, args.pregenerated)),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    rank = trainer.accelerator.process_index
    params = torch.cat(
        [p.detach().reshape(-1).float() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()]
    )
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "generate_calls": trainer.self_play.generate_calls,
        "generation_stats": {k: v.to_dict() for k, v in trainer.self_play.generation_stats.items()},
        "synthetic_ids": trainer.train_dataset.column("synthetic_ids"),
        "prompt_ids": trainer.train_dataset.column("prompt_ids"),
        "param_sum": params.sum().item(),
        "param_abs_sum": params.abs().sum().item(),
        "global_step": trainer.state.global_step,
        "distributed_type": str(trainer.accelerator.distributed_type),
    }
    with open(f"{args.result}.rank{rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
