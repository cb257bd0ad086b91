"""The shifted-draws task: an old rule the warm start learns, a shifted rule self-play learns, both known exactly.

A prompt is `"draw: "` followed by 4 to 7 distinct digits in random order (`"draw: 3719"`). Under a [`Rule`] with
shift k, the answer is n digits drawn uniformly, with replacement, from the prompt's n digits each shifted by k
(mod 10): under the **old rule** (k = 0) `"3719"` may be answered `"1339"`; under the **new rule** (k = 1) by
`"2480"`'s digits, e.g. `"0842"`. So p_data(y | x) = n^-n on the n^n answers of the right length over the allowed
digits, and 0 elsewhere, and every distance to it is computed without a judge:

- **forward KL** KL(p_data || q) = E_{y ~ p_data}[log p_data(y) - log q(y)]. By the chain rule it equals
  E_{y ~ p_data}[sum_j KL(p_data(. | y_<j) || q(. | y_<j))]; p_data's next-token distribution is uniform over the n
  allowed digits at every step, then the end of the turn with probability 1. Each sampled p_data path contributes the
  *exact* per-step KL over the whole next-token distribution, not just the log-probability of the token drawn: an
  unbiased estimate with far less variance than Monte Carlo over whole answers (only the prefixes are sampled; the
  same paths for every model).
- **validity**: the share of answers p_data could have produced (right length, allowed digits only), of the model's
  greedy answer (the stand-in for benchmark accuracy) and of its samples at temperature 1; the samples' validity under
  the *old* rule says whether the model still follows it.
- **advantages** on held-out prompts, as the T-SPIN loss sees them (unscaled): current = logp(y) - logp(y') with y
  the real answer and y' the model's own sample; historical = logp(y') - logp(y0) with y0 the warm start's sample for
  the same prompt (the proto-synthetic response); **inversion**: the share of prompts whose y' the model finds more
  likely than y (ties within 1e-3 nats excluded), as `TSPINTrainer` measures it.

The reverse KL KL(q || p_data) is not reported: it is infinite as soon as q puts mass on an invalid answer, and the
"reverse KL given validity" of the earlier page, estimated from two samples per prompt, was biased (it came out
negative).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


PROMPT_PREFIX = "draw: "
TIE_TOLERANCE = 1e-3
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class Rule:
    """Answers are n digits drawn uniformly, with replacement, from the n prompt digits shifted by `shift` mod 10.

    Example:

    ```python
    >>> rule = Rule(shift=1)
    >>> rule.allowed("3719")
    '4820'
    >>> rule.is_valid("0842", "3719"), rule.is_valid("3719", "3719"), rule.is_valid("084", "3719")
    (True, False, False)
    ```
    """

    shift: int = 0

    def allowed(self, digits: str) -> str:
        return "".join(str((int(d) + self.shift) % 10) for d in digits)

    def draw(self, rng: random.Random, digits: str) -> str:
        allowed = self.allowed(digits)
        return "".join(rng.choice(allowed) for _ in digits)

    def is_valid(self, text: str | None, digits: str) -> bool:
        return text is not None and len(text) == len(digits) and set(text) <= set(self.allowed(digits))

    @staticmethod
    def entropy(n: int) -> float:
        """H(p_data(. | x)) for an n-digit prompt: log n^n."""
        return n * math.log(n)


def prompt_digits(row: dict) -> str:
    return row["prompt"][0]["content"].removeprefix(PROMPT_PREFIX)


def make_rows(num_rows: int, seed: int, rule: Rule, min_digits: int, max_digits: int,
              exclude: set[str]) -> list[dict]:  # fmt: skip
    """`num_rows` prompt/completion rows (conversational) with distinct prompts not in `exclude` (which grows)."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < num_rows:
        digits = "".join(rng.sample("0123456789", rng.randint(min_digits, max_digits)))
        prompt = PROMPT_PREFIX + digits
        if prompt in exclude:
            continue
        exclude.add(prompt)
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": rule.draw(rng, digits)}]})  # fmt: skip
    return rows


def make_splits(sizes: dict[str, int], subset_share: float, seed: int, old: Rule, new: Rule, min_digits: int = 4,
                max_digits: int = 7) -> dict[str, list[dict]]:  # fmt: skip
    """Disjoint prompt sets: `warm` (old-rule answers: the warm start's data), `pool` (new-rule answers; its first
    `subset_share` is the self-play `subset`), `held_out` and `validation` (new-rule answers)."""
    seen: set[str] = set()
    out = {}
    for offset, name in enumerate(("warm", "pool", "held_out", "validation")):
        rule = old if name == "warm" else new
        out[name] = make_rows(sizes[name], seed * 10 + offset, rule, min_digits, max_digits, seen)
    out["subset"] = out["pool"][: max(1, round(sizes["pool"] * subset_share))]
    return out


def quantiles(values: Sequence[float]) -> list[float]:
    """The 10/25/50/75/90% quantiles (nearest rank)."""
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return [float("nan")] * len(QUANTILES)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in QUANTILES]


class Evaluator:
    """Distances of a model to p_data (the `rule`) on one split, tokenized as `TSPINTrainer` tokenizes it.

    Args:
        rows: the split's rows (from [`make_splits`]).
        tokenizer: the model's tokenizer; every digit must be one token (checked).
        rule: the rule the split's answers follow (the target).
        old: the warm start's rule (for the samples' old-rule validity).
        paths: sampled p_data paths per prompt for the forward KL.
        samples: model samples per prompt (0: forward KL only).
        seed: seed of the p_data paths and of the sampling (the same for every model evaluated).
        batch_size: sequences per forward pass / prompts per generate call.
    """

    def __init__(self, rows: Sequence[dict], tokenizer, rule: Rule, old: Rule, paths: int = 2, samples: int = 2,
                 seed: int = 0, batch_size: int = 512):  # fmt: skip
        from tspin_trl.data import TripletTokenizer, eos_token_ids, normalize_row

        self.rows, self.tokenizer, self.rule, self.old = list(rows), tokenizer, rule, old
        self.samples, self.seed, self.batch_size = samples, seed, batch_size
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
        self.tail: list[int] = []
        for i, row in enumerate(self.rows):
            example = tt(normalize_row(row, "prompt_completion", i), i)
            digits = prompt_digits(row)
            answer = row["completion"][0]["content"]
            head = [self.digit_ids[d] for d in answer]
            if example["real_ids"][: len(head)] != head:
                raise ValueError("the answer's digits are not a prefix of its token ids: exact KL not possible")
            self.tail = example["real_ids"][len(head) :]  # end-of-turn tokens, the same for every answer
            self.prompt_ids.append(example["prompt_ids"])
            self.real_ids.append(example["real_ids"])
            self.digits.append(digits)
            self.paths.append([rule.draw(rng, digits) for _ in range(paths)])
        self.max_new_tokens = max(len(d) for d in self.digits) + len(self.tail) + 2

    # ---- log-probabilities -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _logps(self, model, prompts: list[list[int]], responses: list[list[int]],
               digits: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
        """Per response: the log-prob of each of its tokens `(len,)` and, with `digits`, the log-probs of the ten
        digit tokens at each of its positions `(len, 10)` (only these leave the device: the vocabulary can be large)."""
        device = next(model.parameters()).device
        pad = self.tokenizer.pad_token_id
        digit_ids = torch.tensor([self.digit_ids[d] for d in "0123456789"], device=device)
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        was_training = model.training
        model.eval()
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
            per_digit = logps[:, :, digit_ids].cpu() if digits else None
            for i, (p, r) in enumerate(zip(ps, rs)):
                span = slice(len(p) - 1, len(p) - 1 + len(r))
                out.append((chosen[i, span], per_digit[i, span] if per_digit is not None else None))
        if was_training:
            model.train()
        return out

    def sequence_logps(self, model, prompts, responses) -> list[float]:
        return [float(chosen.sum()) for chosen, _ in self._logps(model, prompts, responses)]

    # ---- the distances -----------------------------------------------------------------------------------------------

    def forward_kl(self, model) -> float:
        """Forward KL to p_data (exact per step, Monte Carlo over the p_data paths), mean over prompts (nats)."""
        prompts, responses, meta = [], [], []
        for p, digits, paths in zip(self.prompt_ids, self.digits, self.paths):
            for path in paths:
                prompts.append(p)
                responses.append([self.digit_ids[d] for d in path] + self.tail)
                meta.append(digits)
        kls = []
        for digits, (chosen, digit_logps) in zip(meta, self._logps(model, prompts, responses, digits=True)):
            n = len(digits)
            allowed = [int(d) for d in self.rule.allowed(digits)]
            # per step: KL(uniform over the n allowed digits || q) = -log n - mean of log q over the allowed digits
            kl = -n * math.log(n) - float(digit_logps[:n, allowed].mean(1).sum())
            kl -= float(chosen[n:].sum())  # the end of the turn: p_data puts all its mass there
            kls.append(kl)
        return sum(kls) / len(kls)

    def generate(self, model, accelerator, greedy: bool, copies: int = 1) -> list[list[int]]:
        """`copies` responses per prompt (prompt-major), sampled at temperature 1 or greedy."""
        from tspin_trl.generation import SamplingSettings, generate_responses

        sampling = (SamplingSettings.greedy(self.max_new_tokens) if greedy
                    else SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=1.0))  # fmt: skip
        was_training = model.training
        model.eval()
        responses, _ = generate_responses(model, accelerator, [p for p in self.prompt_ids for _ in range(copies)],
                                          sampling=sampling, pad_token_id=self.tokenizer.pad_token_id,
                                          eos_ids=self.eos_ids, batch_size=self.batch_size, seed=self.seed,
                                          description="evaluate")  # fmt: skip
        if was_training:
            model.train()
        return responses

    def text(self, ids: list[int]) -> str | None:
        """The digits of a response that ends its turn (an eos token) after digits only, else None."""
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        if end is None or any(t not in self.id_digit for t in ids[:end]):
            return None
        return "".join(self.id_digit[t] for t in ids[:end])

    def evaluate(self, model, accelerator, proto: list[list[int]] | None = None) -> tuple[dict[str, Any], list]:
        """Every held-out metric, and the first sample of each prompt (the warm start's are the proto responses).

        Returns `(metrics, first_samples)`; `proto`: the warm start's first samples, for the historical advantage.
        """
        metrics: dict[str, Any] = {"forward_kl": self.forward_kl(model)}
        greedy = self.generate(model, accelerator, greedy=True)
        metrics["validity_greedy"] = self._valid_share(greedy, 1, self.rule)
        if self.samples <= 0:
            return metrics, []
        sampled = self.generate(model, accelerator, greedy=False, copies=self.samples)
        metrics["validity_sampled"] = self._valid_share(sampled, self.samples, self.rule)
        metrics["validity_old_rule"] = self._valid_share(sampled, self.samples, self.old)
        first = sampled[:: self.samples]
        real = self.sequence_logps(model, self.prompt_ids, self.real_ids)
        mine = self.sequence_logps(model, self.prompt_ids, first)
        current = [r - s for r, s in zip(real, mine)]
        metrics["advantage_current"] = sum(current) / len(current)
        metrics["current_quantiles"] = quantiles(current)
        metrics["inversion"] = sum(
            s != y and c < -TIE_TOLERANCE for s, y, c in zip(first, self.real_ids, current)
        ) / len(current)
        metrics["logp_real"] = sum(real) / len(real)
        if proto is not None:
            old = self.sequence_logps(model, self.prompt_ids, proto)
            historical = [s - o for s, o in zip(mine, old)]
            metrics["advantage_historical"] = sum(historical) / len(historical)
        return metrics, first

    def _valid_share(self, responses: list[list[int]], copies: int, rule: Rule) -> float:
        valid = sum(rule.is_valid(self.text(r), self.digits[k // copies]) for k, r in enumerate(responses))
        return valid / len(responses)
