"""Held-out evidence on evaluation data, before training and after every iteration: the likelihood inversion (the
paper's SPIN-vs-T-SPIN diagnostic) and quantities that keep their meaning from one iteration to the next.

What `eval_loss` measures changes at iteration boundaries (beta goes from 0 to 0.1, and the evaluation set's synthetic
responses are sampled again from the new policy), so it cannot tell whether iteration 2 is better than iteration 1.
These can, because they score fixed responses (or the current policy's own samples against fixed ones):

- `heldout_logp_real_per_token`: the log-likelihood of the real (annotated) responses, per scored token (the sum over
  the set divided by the tokens, as the evaluation's `logps/real_per_token`);
- `heldout_margin_real_proto`: the mean of `logp(y) - logp(y0)` (summed log-probs, nats): how much likelier the real
  responses are than the initial policy's samples, which never change;
- `heldout_margin_synthetic_proto`: the mean of `logp(y') - logp(y0)`, with `y'` the current policy's samples: how far
  the policy has moved from its initial samples (the historical advantage, on held-out prompts);
- `likelihood_inversion`: the share of prompts whose sampled response (different from the real one) is likelier than
  the real one by more than the tie tolerance. SPIN drives it up (the paper's Fig. 3); T-SPIN should keep it down.

They are measured with the initial policy before training (label `"start"`, the proto responses as its samples), and
after iteration `t` with the next iteration's synthetic responses of the evaluation set (the current policy's samples,
no extra pass), or, after the last iteration, with one more sampling pass over the evaluation prompts. The log-probs
take one forward pass over the evaluation set (the three responses together) and draw no random numbers. Each
measurement is logged, recorded per iteration (`self_play/iterations.jsonl`) and, with its per-prompt values for
paired intervals, in `self_play/heldout.jsonl`.
"""

from typing import TYPE_CHECKING

from ..collator import response_budget
from ..data import TripletDataset
from ..metrics import TIE_TOLERANCE


if TYPE_CHECKING:
    from ..context import RunContext
    from .responses import ResponseMaker


# The per-iteration quantities, in the order tables show them (the inversion is recorded under its earlier name)
HELDOUT_KEYS = (
    "heldout_logp_real_per_token",
    "heldout_margin_real_proto",
    "heldout_margin_synthetic_proto",
    "likelihood_inversion",
)


def inversion_share(examples: list[dict], real: list[float], synthetic: list[float]) -> float:
    """The share of examples whose synthetic response (different from the real one) is more likely than the real one
    by more than the tie tolerance."""
    inverted = [
        example["synthetic_ids"] != example["real_ids"] and s > r + TIE_TOLERANCE
        for example, r, s in zip(examples, real, synthetic, strict=True)
    ]
    return sum(inverted) / len(inverted)


def scored_tokens(examples: list[dict], max_length: int | None) -> list[int]:
    """The number of real-response tokens scored for every example (cut as the collator cuts them)."""
    return [
        len(example["real_ids"][: response_budget(len(example["prompt_ids"]), max_length)]) for example in examples
    ]


def heldout_measures(examples: list[dict], logps: dict[str, list[float]], tokens: list[int]) -> dict[str, float]:
    """
    The held-out quantities of one evaluation set (see the module's docstring), from the summed log-probs of its
    responses.

    Args:
        examples (`list[dict]`):
            The evaluation examples (`real_ids`, `synthetic_ids`, ...).
        logps (`dict[str, list[float]]`):
            Summed log-probs per role (`"real"`, `"synthetic"`, and `"proto"` when the set has proto responses).
        tokens (`list[int]`):
            Scored tokens of every real response ([`scored_tokens`]).

    Returns:
        `dict[str, float]`: the quantities of `HELDOUT_KEYS` that the roles allow.
    """
    real, synthetic = logps["real"], logps["synthetic"]
    measures = {"heldout_logp_real_per_token": sum(real) / max(sum(tokens), 1)}
    if "proto" in logps:
        measures["heldout_margin_real_proto"] = _mean_margin(examples, "real", real, logps["proto"])
        measures["heldout_margin_synthetic_proto"] = _mean_margin(examples, "synthetic", synthetic, logps["proto"])
    measures["likelihood_inversion"] = inversion_share(examples, real, synthetic)
    return measures


def _mean_margin(examples: list[dict], role: str, values: list[float], proto: list[float]) -> float:
    """The mean of `logp(<role>) - logp(y0)`; exactly 0 where the two responses are the same tokens (before training
    the synthetic responses are the proto ones, and batching would otherwise leave ~1e-7 of floating-point noise)."""
    margins = [
        0.0 if example[f"{role}_ids"] == example["proto_ids"] else value - base
        for example, value, base in zip(examples, values, proto, strict=True)
    ]
    return sum(margins) / len(margins)


def heldout_label(iteration: int | None) -> str:
    """`"start"` before training, `"iteration_<t>"` after iteration `t` (the labels of `scores.jsonl` too)."""
    return "start" if iteration is None else f"iteration_{iteration}"


def _probe_logps(context: "RunContext", probe: TripletDataset, final: bool) -> dict[str, list[float]]:
    """Summed log-probs of the probe's responses under the current policy: the stored reference log-probs when the
    objective computed them from this very policy (at the start of the next iteration), else one forward pass."""
    roles = ("real", "synthetic", "proto") if probe.has("proto") else ("real", "synthetic")
    stored = [f"ref_{role}_logps" for role in roles]
    if context.policy.uses_reference and not final and all(probe.examples[0].get(key) is not None for key in stored):
        return {role: probe.column(key) for role, key in zip(roles, stored, strict=True)}
    return context.compute_logps(probe, roles)


def measure_heldout(
    context: "RunContext",
    responses: "ResponseMaker",
    datasets: dict[str, TripletDataset],
    iteration: int | None,
    global_step: int,
    final: bool = False,
) -> dict[str, dict[str, float]]:
    """
    Measure, log and record the held-out quantities of every evaluation dataset, before training (`iteration=None`)
    or after `iteration`.

    Args:
        context ([`~tspin_trl.context.RunContext`]), responses ([`ResponseMaker`]):
            The run, and its response maker (for the extra sampling pass after the last iteration).
        datasets (`dict[str, TripletDataset]`):
            The datasets self-play fills; the `"train"` one is skipped.
        iteration (`int` or `None`):
            The iteration just finished, or `None` before training.
        global_step (`int`):
            The step of the measurement.
        final (`bool`, *optional*, defaults to `False`):
            After the last iteration: sample the evaluation prompts once more with the current policy.

    Returns:
        `dict[str, dict[str, float]]`: the measures of every evaluation dataset, by name.
    """
    measured = {}
    for name, dataset in datasets.items():
        if name == "train":
            continue
        if final:
            seed = responses.iteration_seed(iteration + 1)
            samples = responses.sample(dataset.column("prompt_ids"), seed, None, f"final/{name}")
            probe = TripletDataset(
                [{**example, "synthetic_ids": ids} for example, ids in zip(dataset.examples, samples, strict=True)]
            )
        else:
            probe = dataset
        logps = _probe_logps(context, probe, final)
        tokens = scored_tokens(probe.examples, context.args.max_length)
        measures = heldout_measures(probe.examples, logps, tokens)
        measured[name] = measures
        suffix = "" if name == "eval" else f"_{name.removeprefix('eval_')}"
        context.metrics.log_now({f"self_play/{key}{suffix}": value for key, value in measures.items()}, iteration)
        if context.args.should_save:
            if iteration is not None:
                context.folder.append_iteration_record(
                    {"iteration": iteration, "step": global_step}
                    | {f"{key}{suffix}": value for key, value in measures.items()}
                )
            context.folder.append_heldout(
                {
                    "label": heldout_label(iteration),
                    "iteration": iteration,
                    "step": global_step,
                    "dataset": name,
                    "measures": measures,
                    "real_tokens": tokens,
                    "logps": logps,
                }
            )
    return measured
