"""Synthetic benchmark data: random text of realistic lengths, the same rows for every contender."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from tspin_trl.demo import CHAR_SPECIAL_TOKENS

from .models import vocab_chars


def lognormal_lengths(rng: random.Random, n: int, low: int, high: int, median: float, sigma: float) -> list[int]:
    """`n` lengths from a log-normal distribution with the given median, clipped to [low, high]."""
    return [int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))) for _ in range(n)]


def prompt_lengths(n: int, low: int = 16, high: int = 128, seed: int = 0) -> list[int]:
    """A realistic spread of prompt lengths: log-normal (sigma 0.6), median 2.5 * low (40 tokens for [16, 128])."""
    rng = random.Random(seed)
    return lognormal_lengths(rng, n, low, high, median=min(high, 2.5 * low), sigma=0.6)


def random_text(rng: random.Random, alphabet: Sequence[str], length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


@dataclass
class BenchData:
    """Text rows for both trainers: the same prompts, real responses and synthetic responses for every contender."""

    rows: list[dict[str, str]]  # prompt, completion (real), synthetic, proto
    prompt_max: int
    response_max: int

    @property
    def max_length(self) -> int:
        return self.prompt_max + self.response_max

    def tspin_rows(self, synthetic: bool = True, proto: bool = True) -> list[dict[str, str]]:
        keys = ["prompt", "completion"] + (["synthetic"] if synthetic else []) + (["proto"] if proto else [])
        return [{k: row[k] for k in keys} for row in self.rows]

    def dpo_rows(self) -> list[dict[str, str]]:
        """SPIN as DPO: the real response is chosen, the synthetic one rejected."""
        return [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["synthetic"]} for r in self.rows]

    def prompts(self) -> list[str]:
        return [row["prompt"] for row in self.rows]


def make_data(
    tokenizer,
    n: int,
    *,
    prompt_low: int = 16,
    prompt_high: int = 128,
    response_max: int = 64,
    seed: int = 0,
    fixed_lengths: bool = False,
) -> BenchData:
    """`n` rows of random text: prompts of [prompt_low, prompt_high] tokens (log-normal spread), responses of at most
    `response_max` tokens including the end-of-sequence token the trainers append. Real responses are log-normal
    around half the cap; synthetic and proto responses too, with a third of them at the cap (generations that ran
    out of tokens). `fixed_lengths`: every prompt is `prompt_high` tokens and every response `response_max`."""
    rng = random.Random(seed)
    alphabet = vocab_chars(len(tokenizer) - len(CHAR_SPECIAL_TOKENS))
    lengths = [prompt_high] * n if fixed_lengths else prompt_lengths(n, prompt_low, prompt_high, seed)
    cap = response_max - 1  # the trainers append an eos token

    def response_len() -> int:
        if fixed_lengths:
            return cap
        return lognormal_lengths(rng, 1, min(8, cap), cap, median=max(1, cap / 2), sigma=0.5)[0]

    rows = []
    for length in lengths:
        rows.append(
            {
                "prompt": random_text(rng, alphabet, length),
                "completion": random_text(rng, alphabet, response_len()),
                "synthetic": random_text(rng, alphabet, cap if rng.random() < 1 / 3 else response_len()),
                "proto": random_text(rng, alphabet, cap if rng.random() < 1 / 3 else response_len()),
            }
        )
    return BenchData(rows=rows, prompt_max=prompt_high, response_max=response_max)


def response_lengths(n: int, cap: int, seed: int = 0) -> list[int]:
    """Realistic response lengths for forced-length generation: log-normal around half the cap, 20% at the cap."""
    rng = random.Random(seed + 17)
    lengths = lognormal_lengths(rng, n, 4, cap, median=cap / 2, sigma=0.6)
    return [cap if rng.random() < 0.2 else length for length in lengths]
