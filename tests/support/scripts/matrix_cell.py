"""One cell of the configuration matrix (tests/launches/test_matrix.py): a two-iteration greedy self-play run of a tiny model.

Launched by the test in one process (the references) or under `accelerate launch` with two. Reads nothing of the
trainer's internals: the test reads the run folder, and this script writes the final parameters, gathered on every
process under ZeRO-3 and saved by the main one, to `<result>.safetensors`, plus a few facts to `<result>.json`.
"""

import argparse
import json
import time

import torch
from datasets import Dataset
from safetensors.torch import save_file

from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


# 12 prompts of a spread of lengths: with 2 processes x 2 per device, 3 optimizer steps per iteration
ROWS = [
    {
        "prompt": "sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 4)) + "\n",
        "completion": " ".join(sorted(str((i * 7 + k * 3) % 10) for k in range(3 + i % 4))),
    }
    for i in range(12)
]


def full_parameters(trainer: TSPINTrainer) -> dict[str, torch.Tensor]:
    """Every parameter in full on every process (ZeRO-3 partitions them: all processes must take part)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    parameters = list(model.named_parameters())
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in parameters]):
            return {name: p.detach().to("cpu", torch.float32).clone() for name, p in parameters}
    return {name: p.detach().to("cpu", torch.float32).clone() for name, p in parameters}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--model_dir", help="load the model from this folder (else build it in memory)")
    parser.add_argument("--objective", default="tspin")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--backend", choices=["hf", "vllm_colocate", "vllm_server"], default="hf")
    parser.add_argument("--vllm_server_base_url")
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--mix_previous_iteration", action="store_true")
    args = parser.parse_args()

    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    if args.model_dir:
        model, tokenizer = args.model_dir, None  # the trainer loads both from the folder
    else:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, num_attention_heads=2)  # head_dim 32: vLLM's CPU attention needs >= 32
    config = TSPINConfig(
        output_dir=args.output_dir,
        objective=args.objective,
        num_iterations=2,
        per_device_train_batch_size=args.per_device_train_batch_size,
        generation_batch_size=2,
        max_completion_length=8,
        max_length=48,
        learning_rate=args.learning_rate,
        # AdamW: RMSProp's first steps collapse this tiny model's greedy responses to one repeated token
        optim="adamw_torch",
        warmup_steps=0,
        beta_first_iteration=0.1,
        logging_steps=1,
        report_to=[],
        gradient_checkpointing=args.gradient_checkpointing,
        mix_previous_iteration=args.mix_previous_iteration,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        dataloader_pin_memory=False,
        generation_kwargs={"do_sample": False},
        use_vllm=args.backend != "hf",
        vllm_mode="server" if args.backend == "vllm_server" else "colocate",
        vllm_server_base_url=args.vllm_server_base_url,
    )
    trainer = TSPINTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    parameters = full_parameters(trainer)
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        save_file(parameters, f"{args.result}.safetensors")
        facts = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "zero_stage": accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None,
            "train_seconds": seconds,
            "global_step": trainer.state.global_step,
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        }
        with open(f"{args.result}.json", "w") as f:
            json.dump(facts, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
