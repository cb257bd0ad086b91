"""The held-out evidence (likelihood inversion, log-likelihood per token, margins over the proto responses) on a model
whose log-probs are known by hand: with every weight zero the next-token distribution is uniform, so a response of `L`
tokens has log-prob `-L * log(V)` and the shorter response is the more likely one."""

import math

import pytest
import torch

from tests.support import make_context, model_logps
from tspin_trl.data import TripletDataset
from tspin_trl.demo import build_tiny_model
from tspin_trl.metrics import TIE_TOLERANCE
from tspin_trl.self_play import IterationFiles, ResponseMaker
from tspin_trl.self_play.inversion import inversion_share, measure_heldout, scored_tokens


@pytest.fixture
def uniform_model(tokenizer):
    model = build_tiny_model(tokenizer)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    return model


PROMPT = [5, 6, 7]
REAL = [20, 21, 22, 23, 24]
# shorter (more likely: inverted), as long (a tie), longer, the real response itself (never inverted)
SYNTHETIC = [[30, 31, 32], [30, 31, 32, 33, 34], [30, 31, 32, 33, 34, 35, 36], REAL]


def eval_set() -> TripletDataset:
    return TripletDataset([{"prompt_ids": PROMPT, "real_ids": REAL, "synthetic_ids": s} for s in SYNTHETIC])


def setup(tmp_path, tokenizer, model, **config):
    context, logged = make_context(tmp_path, tokenizer, model, steps_per_epoch=2, num_iterations=2, **config)
    responses = ResponseMaker(context, IterationFiles(context.folder, context.vocab_size, "this-run"))
    return context, logged, responses


def test_a_uniform_model_gives_each_token_log_one_over_v(tokenizer, uniform_model):
    logps = model_logps(uniform_model)(eval_set(), ("real", "synthetic"))
    per_token = -math.log(uniform_model.config.vocab_size)
    assert logps["real"] == pytest.approx([5 * per_token] * 4)
    assert logps["synthetic"] == pytest.approx([3 * per_token, 5 * per_token, 7 * per_token, 5 * per_token])


def test_the_share_counts_strictly_more_likely_different_responses():
    examples = eval_set().examples
    assert inversion_share(examples, [-5.0] * 4, [-3.0, -5.0, -7.0, -1.0]) == 0.25, "the real response is excluded"
    assert inversion_share(examples, [-5.0] * 4, [-5.0 + TIE_TOLERANCE / 2] * 4) == 0.0, "a tie is not an inversion"


def test_the_inversion_after_an_iteration_is_logged_and_recorded(tmp_path, tokenizer, uniform_model):
    context, logged, responses = setup(tmp_path, tokenizer, uniform_model)
    datasets = {"train": eval_set(), "eval": eval_set(), "eval_other": TripletDataset(eval_set().examples[:2])}
    measure_heldout(context, responses, datasets, iteration=0, global_step=4)
    per_token = -math.log(uniform_model.config.vocab_size)
    assert [line["self_play/likelihood_inversion" + suffix] for line, suffix in zip(logged, ("", "_other"))] == [
        0.25,
        0.5,
    ], "evaluation sets only, each under its own name"
    assert logged[0]["self_play/heldout_logp_real_per_token"] == pytest.approx(per_token)
    assert logged[1]["self_play/heldout_logp_real_per_token_other"] == pytest.approx(per_token)
    assert all(line["self_play/iteration"] == 0 for line in logged)
    assert not any("margin" in key for key in logged[0]), "no proto responses: no margins over them"
    record = context.folder.iteration_records()[0]
    assert (record["step"], record["likelihood_inversion"], record["likelihood_inversion_other"]) == (4, 0.25, 0.5)
    assert responses.generate_calls == 0, "the next iteration's samples: no extra pass"


def test_with_a_reference_objective_the_stored_reference_logps_are_used(tmp_path, tokenizer, uniform_model):
    context, logged, responses = setup(tmp_path, tokenizer, uniform_model, objective="spin")
    dataset = eval_set()
    dataset.set_column("ref_real_logps", [-9.0] * 4)
    dataset.set_column("ref_synthetic_logps", [-1.0] * 4)  # every synthetic response more likely, but the real one
    measure_heldout(context, responses, {"eval": dataset}, iteration=0, global_step=4)
    assert logged[-1]["self_play/likelihood_inversion"] == 0.75


def test_after_the_last_iteration_the_policy_samples_once_more(tmp_path, tokenizer, uniform_model):
    context, logged, responses = setup(tmp_path, tokenizer, uniform_model, max_completion_length=4)
    dataset = eval_set()
    measure_heldout(context, responses, {"eval": dataset}, iteration=1, global_step=8, final=True)
    stats = responses.generation_stats["final/eval"]
    assert stats.num_prompts == 4 and stats.num_tokens <= 16
    # every sample has at most 4 tokens, fewer than the real response's 5: under the uniform model, all inverted
    assert logged[-1]["self_play/likelihood_inversion"] == 1.0 and logged[-1]["self_play/iteration"] == 1
    assert dataset.column("synthetic_ids") == SYNTHETIC, "the evaluation set itself is left as it was"


def test_before_training_the_real_responses_are_compared_with_the_fixed_proto_ones(tmp_path, tokenizer, uniform_model):
    """The start: per-token log-likelihood, margins over the proto responses (summed log-probs), the inversion, with
    their per-prompt values in `heldout.jsonl` and no per-iteration record (no iteration has run)."""
    context, logged, responses = setup(tmp_path, tokenizer, uniform_model)
    proto = [[40, 41], [40, 41, 42, 43, 44, 45]]  # 2 and 6 tokens
    dataset = TripletDataset(
        [{"prompt_ids": PROMPT, "real_ids": REAL, "synthetic_ids": ids, "proto_ids": ids} for ids in proto]
    )
    measured = measure_heldout(context, responses, {"train": dataset, "eval": dataset}, None, 0)
    per_token = -math.log(uniform_model.config.vocab_size)
    assert measured["eval"] == pytest.approx(
        {
            "heldout_logp_real_per_token": per_token,
            "heldout_margin_real_proto": ((5 - 2) + (5 - 6)) / 2 * per_token,
            "heldout_margin_synthetic_proto": 0.0,  # the proto responses are the initial policy's samples
            "likelihood_inversion": 0.5,  # the 2-token sample is likelier than the 5-token real response
        }
    )
    assert logged == [{f"self_play/{key}": value for key, value in measured["eval"].items()}], "no iteration tag"
    assert context.folder.iteration_records() == {}
    (line,) = context.folder.heldout()
    assert (line["label"], line["iteration"], line["dataset"], line["real_tokens"]) == ("start", None, "eval", [5, 5])
    assert line["logps"]["proto"] == pytest.approx([2 * per_token, 6 * per_token])


def test_scored_tokens_are_cut_as_the_collator_cuts_them():
    examples = [{"prompt_ids": [1] * 6, "real_ids": [2] * 5}, {"prompt_ids": [1] * 2, "real_ids": [2] * 5}]
    assert scored_tokens(examples, max_length=8) == [2, 5] and scored_tokens(examples, None) == [5, 5]
