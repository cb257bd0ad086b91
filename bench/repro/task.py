"""The permutation task: a target distribution known exactly, and the distances to it.

A prompt is `"perm: "` followed by 6 to 9 distinct digits in random order (`"perm: 371902"`); the real answer is a
uniformly random permutation of those digits (`"209137"`). So p_data(y | x) = 1/n! for every permutation y of the n
prompt digits and 0 otherwise, and every distance to it can be computed without a judge:

- **forward KL** KL(p_data || q) = E_{y ~ p_data}[log p_data(y) - log q(y)]. By the chain rule it equals
  E_{y ~ p_data}[sum_j KL(p_data(. | y_<j) || q(. | y_<j))], and p_data's next-token distribution is uniform over the
  digits not used yet (then the end of the turn with probability 1). Each sampled path therefore contributes the *exact*
  per-step KL over all next tokens, not just the log-probability of the one token drawn: an unbiased estimate with far
  less variance than Monte Carlo over whole sequences (the expectation over prefixes is the only sampled part). n! is up
  to 362,880, so paths are sampled (uniform permutations, the same ones for every model: common random numbers).
- **validity**: the share of the model's own samples (temperature 1) that are permutations of the prompt digits.
- **reverse KL** KL(q || p_data) is infinite as soon as q puts mass on an invalid answer; reported instead is the
  reverse KL of q *conditioned on validity*, E_{y ~ q | valid}[log q(y)] - log q(valid) + log n!, estimated from the
  same samples (log q(valid) from their valid share: a plug-in estimate, biased for few samples per prompt).
- **likelihood inversion**: the share of prompts whose first sample (different from the real answer) the model finds
  more likely than the real answer (ties within 1e-3 nats are not inversions), as `TSPINTrainer` measures it. Note that
  under p_data itself the real answer and a sample are equally likely, so inversion is not a defect on this task.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch


PROMPT_PREFIX = "perm: "
TIE_TOLERANCE = 1e-3


def make_rows(
    num_rows: int,
    seed: int,
    min_digits: int = 6,
    max_digits: int = 9,
    exclude: set[str] | None = None,
    replacement: bool = False,
):
    """`num_rows` prompt/completion rows (conversational) with distinct prompts (none of them in `exclude`); the answer
    is a uniform permutation of the prompt digits, or with `replacement` n digits drawn uniformly from them."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    rows = []
    while len(rows) < num_rows:
        digits = rng.sample("0123456789", rng.randint(min_digits, max_digits))
        prompt = PROMPT_PREFIX + "".join(digits)
        if prompt in seen:
            continue
        seen.add(prompt)
        answer = "".join(draw(rng, digits, replacement))
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": answer}],
            }
        )
    return rows


def draw(rng: random.Random, digits, replacement: bool) -> list[str]:
    """One draw from p_data: a uniform permutation, or `len(digits)` uniform draws with replacement."""
    return [rng.choice(digits) for _ in digits] if replacement else rng.sample(list(digits), len(digits))


def make_splits(
    pool: int,
    held_out: int,
    validation: int,
    seed: int,
    min_digits: int = 6,
    max_digits: int = 9,
    replacement: bool = False,
) -> dict[str, list[dict]]:
    """Disjoint splits: `pool` (the warm start's data; its first 25% is the self-play subset), `held_out`, `validation`."""
    pool_rows = make_rows(pool, seed, min_digits, max_digits, replacement=replacement)
    used = {r["prompt"][0]["content"] for r in pool_rows}
    held = make_rows(held_out, seed + 1, min_digits, max_digits, exclude=used, replacement=replacement)
    used |= {r["prompt"][0]["content"] for r in held}
    val = make_rows(validation, seed + 2, min_digits, max_digits, exclude=used, replacement=replacement)
    return {"pool": pool_rows, "quarter": pool_rows[: max(1, pool // 4)], "held_out": held, "validation": val}


def prompt_digits(row: dict) -> str:
    return row["prompt"][0]["content"].removeprefix(PROMPT_PREFIX)


def is_valid(text: str, digits: str, replacement: bool = False) -> bool:
    if replacement:
        return len(text) == len(digits) and set(text) <= set(digits)
    return len(text) == len(digits) and sorted(text) == sorted(digits)


def log_support(n: int, replacement: bool) -> float:
    """log of the number of answers p_data spreads its mass over (n! or n^n)."""
    return n * math.log(n) if replacement else math.lgamma(n + 1)


class Evaluator:
    """Distances of a model to p_data on one split, tokenized as `TSPINTrainer` tokenizes it.

    Args:
        rows: the split's rows (from [`make_rows`]).
        tokenizer: the model's tokenizer; every digit must be one token (checked).
        paths: sampled p_data paths per prompt for the forward KL.
        samples: model samples per prompt for validity, reverse KL and inversion (0: forward KL only).
        seed: seed of the p_data paths and of the sampling (the same for every model evaluated).
        batch_size: sequences per forward pass / prompts per generate call.
    """

    def __init__(self, rows: Sequence[dict], tokenizer, paths: int = 4, samples: int = 4, seed: int = 0,
                 batch_size: int = 512, replacement: bool = False):  # fmt: skip
        from tspin_trl.data import TripletTokenizer, eos_token_ids, normalize_row

        self.rows, self.tokenizer, self.samples, self.seed, self.batch_size = (
            list(rows),
            tokenizer,
            samples,
            seed,
            batch_size,
        )
        self.replacement = replacement
        self._masks: dict[tuple[str, str], tuple[torch.Tensor, float]] = {}
        self.eos_ids = eos_token_ids(tokenizer)
        self.digit_ids = {}
        for d in "0123456789":
            ids = tokenizer.encode(d, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"digit {d!r} is {len(ids)} tokens in this tokenizer; the exact KL needs one")
            self.digit_ids[d] = ids[0]
        self.id_digit = {v: k for k, v in self.digit_ids.items()}
        tt = TripletTokenizer(tokenizer, None, None, "keep_end", self.eos_ids)
        rng = random.Random(seed)
        self.prompt_ids, self.real_ids, self.paths, self.digits = [], [], [], []
        for i, row in enumerate(self.rows):
            example = tt(normalize_row(row, "prompt_completion", i), i)
            digits = prompt_digits(row)
            self.prompt_ids.append(example["prompt_ids"])
            self.real_ids.append(example["real_ids"])
            self.digits.append(digits)
            answer = row["completion"][0]["content"]
            head = [self.digit_ids[d] for d in answer]
            if example["real_ids"][: len(head)] != head:
                raise ValueError("the answer's digits are not a prefix of its token ids: exact KL not possible")
            self.tail = example["real_ids"][len(head) :]  # end-of-turn tokens, the same for every answer
            self.paths.append(["".join(draw(rng, digits, replacement)) for _ in range(paths)])

    # ---- log-probabilities -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _logps(
        self, model, prompts: list[list[int]], responses: list[list[int]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per response: the log-prob of each of its tokens `(len,)`, and the log-probs of the ten digit tokens at each
        of its positions `(len, 10)` (only these leave the device: the vocabulary can be large)."""
        device = next(model.parameters()).device
        pad = self.tokenizer.pad_token_id
        digit_ids = torch.tensor([self.digit_ids[d] for d in "0123456789"], device=device)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(prompts), self.batch_size):
            ps, rs = prompts[start : start + self.batch_size], responses[start : start + self.batch_size]
            seqs = [p + r for p, r in zip(ps, rs)]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            chosen = logps.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
            digits = logps[:, :, digit_ids].cpu()
            for i, (p, r) in enumerate(zip(ps, rs)):
                span = slice(len(p) - 1, len(p) - 1 + len(r))
                out.append((chosen[i, span], digits[i, span]))
        return out

    def _sequence_logps(self, model, prompts, responses) -> list[float]:
        return [float(chosen.sum()) for chosen, _ in self._logps(model, prompts, responses)]

    # ---- the distances -----------------------------------------------------------------------------------------------

    def forward_kl(self, model) -> dict[str, float]:
        """Forward KL (exact per step, Monte Carlo over p_data paths) and the cross-entropy of the sampled paths."""
        prompts, responses, meta = [], [], []
        for p, digits, paths in zip(self.prompt_ids, self.digits, self.paths):
            for path in paths:
                prompts.append(p)
                responses.append([self.digit_ids[d] for d in path] + self.tail)
                meta.append((digits, path))
        kls, nlls = [], []
        for (digits, path), (chosen, digit_logps) in zip(meta, self._logps(model, prompts, responses)):
            mask, entropy = self._path_mask(digits, path)
            # per step: KL(uniform over the allowed digits || q) = -log m - mean of log q over the allowed digits
            kl = entropy - float(((digit_logps[: len(path)] * mask).sum(1) / mask.sum(1)).sum())
            kl += -float(chosen[len(path) :].sum())  # the end of the turn: p_data puts all its mass there
            kls.append(kl)
            nlls.append(-float(chosen.sum()))
        return {"forward_kl": sum(kls) / len(kls), "nll_pdata": sum(nlls) / len(nlls)}

    def _path_mask(self, digits: str, path: str) -> tuple[torch.Tensor, float]:
        """The digits p_data allows at each step of `path` as a `(len, 10)` 0/1 mask, and sum over steps of -log m."""
        key = (digits, path)
        if key not in self._masks:
            mask, entropy, remaining = torch.zeros(len(path), 10), 0.0, [int(d) for d in digits]
            for j, d in enumerate(path):
                mask[j, remaining] = 1.0
                entropy -= math.log(len(remaining))
                if not self.replacement:
                    remaining.remove(int(d))
            self._masks[key] = (mask, entropy)
        return self._masks[key]

    def sample(self, model, accelerator) -> dict[str, Any]:
        """Validity, reverse KL given validity, likelihood inversion and the margin logp(real) - logp(sample)."""
        from tspin_trl.generation import SamplingSettings, generate_responses

        if self.samples <= 0:
            return {}
        prompts = [p for p in self.prompt_ids for _ in range(self.samples)]
        max_new = max(len(d) for d in self.digits) + len(self.tail) + 2
        was_training = model.training
        model.eval()
        responses, _ = generate_responses(
            model,
            accelerator,
            prompts,
            sampling=SamplingSettings(max_new_tokens=max_new, temperature=1.0),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_ids=self.eos_ids,
            batch_size=self.batch_size,
            seed=self.seed,
            description="evaluate",
        )
        sample_logps = self._sequence_logps(model, prompts, responses)
        real_logps = self._sequence_logps(model, self.prompt_ids, self.real_ids)
        if was_training:
            model.train()
        valid_total, reverse, inverted, margins, distinct = 0, [], [], [], []
        for i, digits in enumerate(self.digits):
            block = range(i * self.samples, (i + 1) * self.samples)
            texts = [self._digits_text(responses[k]) for k in block]
            valid = [k for k, t in zip(block, texts) if t is not None and is_valid(t, digits, self.replacement)]
            valid_total += len(valid)
            if valid:
                share = len(valid) / self.samples
                mean_logq = sum(sample_logps[k] for k in valid) / len(valid)
                reverse.append(mean_logq - math.log(share) + log_support(len(digits), self.replacement))
                distinct.append(len({tuple(responses[k]) for k in valid}) / len(valid))
            first = i * self.samples
            margin = real_logps[i] - sample_logps[first]
            margins.append(margin)
            inverted.append(responses[first] != self.real_ids[i] and -margin > TIE_TOLERANCE)
        return {
            "validity": valid_total / len(prompts),
            "reverse_kl_valid": sum(reverse) / len(reverse) if reverse else float("nan"),
            "distinct_valid": sum(distinct) / len(distinct) if distinct else float("nan"),
            "inversion": sum(inverted) / len(inverted),
            "margin_quantiles": quantiles(margins),
            "logp_real": sum(real_logps) / len(real_logps),
        }

    def _digits_text(self, ids: list[int]) -> str | None:
        """The digits of a response that ends its turn (an eos token) after digits only, else None."""
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        if end is None or any(t not in self.id_digit for t in ids[:end]):
            return None
        return "".join(self.id_digit[t] for t in ids[:end])

    def real_logp(self, model) -> float:
        """Mean log-probability of the rows' own (annotated) answers."""
        values = self._sequence_logps(model, self.prompt_ids, self.real_ids)
        return sum(values) / len(values)

    def evaluate(self, model, accelerator) -> dict[str, Any]:
        return {**self.forward_kl(model), **self.sample(model, accelerator)}


QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def quantiles(values: Sequence[float]) -> list[float]:
    """The 10/25/50/75/90% quantiles (nearest rank)."""
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return [float("nan")] * len(QUANTILES)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in QUANTILES]
