"""The likelihood inversion on evaluation data: the paper's SPIN-vs-T-SPIN diagnostic, after every iteration.

After iteration `t`, the share of evaluation prompts whose sampled response the policy finds more likely than the
real one (`self_play/likelihood_inversion`). SPIN drives it up (the paper's Fig. 3); T-SPIN should keep it down. It is
measured with the next iteration's synthetic responses (the current policy's samples, no extra pass), or, after the
last iteration, with one more sampling pass over the evaluation prompts.
"""

from typing import TYPE_CHECKING

from ..data import TripletDataset
from ..metrics import TIE_TOLERANCE


if TYPE_CHECKING:
    from ..context import RunContext
    from .responses import ResponseMaker


def inversion_share(examples: list[dict], real: list[float], synthetic: list[float]) -> float:
    """The share of examples whose synthetic response (different from the real one) is more likely than the real one
    by more than the tie tolerance."""
    inverted = [
        example["synthetic_ids"] != example["real_ids"] and s > r + TIE_TOLERANCE
        for example, r, s in zip(examples, real, synthetic, strict=True)
    ]
    return sum(inverted) / len(inverted)


def measure_inversion(
    context: "RunContext",
    responses: "ResponseMaker",
    datasets: dict[str, TripletDataset],
    iteration: int,
    global_step: int,
    final: bool = False,
) -> None:
    """Log and record the likelihood inversion of every evaluation dataset after `iteration`."""
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
        if context.policy.uses_reference and not final and probe.examples[0].get("ref_real_logps") is not None:
            real, synthetic = probe.column("ref_real_logps"), probe.column("ref_synthetic_logps")
        else:
            logps = context.compute_logps(probe, ("real", "synthetic"))
            real, synthetic = logps["real"], logps["synthetic"]
        key = "self_play/likelihood_inversion" + ("" if name == "eval" else f"_{name.removeprefix('eval_')}")
        value = inversion_share(probe.examples, real, synthetic)
        context.metrics.log_now({key: value}, iteration)
        if context.args.should_save:
            context.folder.append_iteration_record(
                {"iteration": iteration, "step": global_step, key.removeprefix("self_play/"): value}
            )
