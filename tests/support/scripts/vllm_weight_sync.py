"""Does a colocated vLLM engine started from a model built in memory generate from the policy's weights?

Run by tests/launches/test_vllm.py in a subprocess (a vLLM engine initialises torch.distributed). A model built from a config has
no folder, so the engine starts with random weights (`load_format="dummy"`) and every generation pass sends the
trainer's weights first. This script compares the engine's log-probabilities of fixed token sequences (vLLM's
`prompt_logprobs`, every position) with the policy's own forward pass: before the first sync (they must differ: the
engine holds other weights), after it, and after the policy's weights change (as training changes them), with and
without a LoRA adapter (which TRL merges before sending). Writes the largest differences to `<result>.json`.
"""

import argparse
import json

import torch
from accelerate import Accelerator

from tspin_trl import TSPINConfig
from tspin_trl.demo import build_char_tokenizer, build_tiny_model
from tspin_trl.vllm_backend import VLLMGenerationBackend


TEXTS = ["sort: 3 1 2\n1 2 3", "sort: 9 0 4 4\n0 4 4 9", "hello world", "the quick brown fox"]


def policy_logprobs(model: torch.nn.Module, sequences: list[list[int]]) -> list[torch.Tensor]:
    """log p(token t | tokens < t) for t >= 1, from the policy's forward pass (a PEFT model: with its adapter)."""
    result = []
    with torch.no_grad():
        for ids in sequences:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            result.append(logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0])
    return result


def engine_logprobs(backend: VLLMGenerationBackend, sequences: list[list[int]]) -> list[torch.Tensor]:
    """The same log-probabilities from the vLLM engine (its `prompt_logprobs`)."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, temperature=0.0)
    outputs = backend.vllm.llm.generate(
        [TokensPrompt(prompt_token_ids=ids) for ids in sequences], params, use_tqdm=False
    )
    return [
        torch.tensor([entry[token].logprob for token, entry in zip(ids[1:], output.prompt_logprobs[1:])])
        for ids, output in zip(sequences, outputs)
    ]


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def probe(output_dir: str, lora: bool) -> dict:
    """Start an engine for a model built in memory (with a LoRA adapter if `lora`) and measure it; see the docstring."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, num_attention_heads=2)  # head_dim 32: vLLM's CPU attention needs >= 32
    if lora:
        from peft import LoraConfig, get_peft_model

        # Random (not zero) B matrices: the adapter changes the outputs, so only merged weights can match. Adapters on
        # layers vLLM fuses (q/v into qkv_proj, gate into gate_up_proj) and one it does not (o_proj).
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj"], init_lora_weights=False)
        model = get_peft_model(model, config)
    model.eval()
    # The config first: building it resets accelerate's state
    args = TSPINConfig(output_dir=output_dir, use_cpu=True, use_vllm=True, vllm_mode="colocate", report_to=[])
    accelerator = Accelerator(cpu=True)
    backend = VLLMGenerationBackend(args, model, accelerator, tokenizer)
    sequences = [tokenizer(text)["input_ids"] for text in TEXTS]
    facts = {"load_format": backend.vllm.load_format, "tokens": sum(len(ids) - 1 for ids in sequences)}
    try:
        initial = policy_logprobs(model, sequences)
        facts["before_sync"] = largest_difference(engine_logprobs(backend, sequences), initial)
        with backend.session(model, accelerator):
            facts["after_sync"] = largest_difference(engine_logprobs(backend, sequences), initial)
        # The policy changes (as a training step changes it); the next pass must see the new weights
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1)
            for parameter in model.parameters():
                if parameter.requires_grad:  # LoRA: only the adapter changes
                    parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        changed = policy_logprobs(model, sequences)
        facts["policy_change"] = largest_difference(changed, initial)
        with backend.session(model, accelerator):
            facts["after_change_and_sync"] = largest_difference(engine_logprobs(backend, sequences), changed)
        # A sync that leaves an engine weight out (here the final norm's) must fail, not generate from its old value
        send_all = backend.vllm._iter_named_params
        backend.vllm._iter_named_params = lambda: ((n, p) for n, p in send_all() if n != "model.norm.weight")
        try:
            with backend.session(model, accelerator):
                pass
        except RuntimeError as error:
            facts["incomplete_sync_error"] = str(error)
    finally:
        backend.close()
    return facts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    # Both in one process: a second engine starts in seconds
    facts = {name: probe(f"{args.output_dir}/{name}", lora=name == "lora") for name in ("full", "lora")}
    with open(f"{args.result}.json", "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main()
