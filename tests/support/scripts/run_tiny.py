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
from transformers import TrainerCallback

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


class StopAfter(TrainerCallback):
    """Ends `train()` after a given step, as an interruption that leaves the checkpoints written so far."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


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
    parser.add_argument("--save_steps", type=float, default=500)
    parser.add_argument("--save_on_each_node", action="store_true")
    parser.add_argument("--stop_after_step", type=int, default=0, help="stop training cleanly after this step")
    parser.add_argument("--warmup_steps", type=float, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill_after_chunks", type=int, default=0)
    # vLLM runs: its CPU attention needs head_dim >= 32 (hidden 64 / 2 heads)
    parser.add_argument("--num_attention_heads", type=int, default=4)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--optim", default=None, help="the optimizer (default: TSPINConfig's, RMSProp)")
    parser.add_argument("--use_vllm", action="store_true")
    parser.add_argument("--vllm_mode", default="colocate")
    parser.add_argument("--vllm_server_base_url", default=None)
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
    model = build_tiny_model(tokenizer, num_attention_heads=args.num_attention_heads)
    config = TSPINConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_train_batch_size,
        num_iterations=args.num_iterations,
        generation_batch_size=args.generation_batch_size,
        max_completion_length=8,
        max_length=48,
        learning_rate=args.learning_rate,
        **({"optim": args.optim} if args.optim else {}),
        warmup_steps=args.warmup_steps,
        beta_first_iteration=0.1,
        logging_steps=1,
        report_to=[],
        gradient_checkpointing=False,
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        save_on_each_node=args.save_on_each_node,
        use_cpu=True,
        seed=0,
        dataloader_pin_memory=False,
        generation_kwargs={"do_sample": False} if args.greedy else None,
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        vllm_server_base_url=args.vllm_server_base_url,
    )
    trainer = TSPINTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(args.num_prompts, args.pregenerated)),
        processing_class=tokenizer,
    )
    if args.stop_after_step:
        trainer.add_callback(StopAfter(args.stop_after_step))
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    rank = trainer.accelerator.process_index
    params = torch.cat(
        [p.detach().reshape(-1).float() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()]
    )
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "learning_rates": [h["learning_rate"] for h in trainer.state.log_history if "loss" in h],
        "optimizer_resets": [
            h["self_play/optimizer_states_reset"]
            for h in trainer.state.log_history
            if "self_play/optimizer_states_reset" in h
        ],
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
