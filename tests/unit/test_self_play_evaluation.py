"""`EvaluationResponses`: the responses of a dataset passed to `evaluate()`, at a point of the run."""

import pytest
from datasets import Dataset

from tests.support import make_context, sorting_rows
from tspin_trl.clock import IterationPoint
from tspin_trl.data import TripletTokenizer, check_columns, eos_token_ids, tokenize_dataset
from tspin_trl.self_play import EvaluationResponses, IterationFiles, ResponseMaker, SelfPlayError


def eval_set(tokenizer, offset: int = 40):
    rows = Dataset.from_list(sorting_rows(3, offset=offset))
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer), max_completion_length=10)
    return tokenize_dataset(rows, check_columns(rows, "eval"), encode, "eval")


def service(tmp_path, tokenizer, model, **config):
    context, _ = make_context(tmp_path, tokenizer, model, steps_per_epoch=2, num_iterations=2, **config)
    files = IterationFiles(context.folder, context.vocab_size)
    responses = ResponseMaker(context, files)
    identities = []

    def compute_identity():
        identities.append(True)
        files.identity_digest = "this-run"

    return context, responses, EvaluationResponses(context, responses, files, compute_identity), identities


def test_before_training_the_initial_policys_samples_are_kept_and_read_back(tmp_path, tokenizer, model):
    context, responses, evaluation, identities = service(tmp_path, tokenizer, model)
    dataset = eval_set(tokenizer)
    evaluation.prepare("eval", dataset, global_step=0)
    assert identities == [True], "the identity binds the files, computed when no `train()` has"
    assert dataset.column("synthetic_ids") == dataset.column("proto_ids"), "before training: the same policy"
    assert not dataset.include_proto, "iteration 0 has no historical term"
    calls = responses.generate_calls
    assert calls == 1
    written = list((tmp_path / "self_play" / "evaluate" / "step_0").glob("eval-*.jsonl"))
    assert len(written) == 1

    again = eval_set(tokenizer)
    evaluation.prepare("eval", again, global_step=0)
    assert responses.generate_calls == calls and again.column("synthetic_ids") == dataset.column("synthetic_ids")
    assert identities == [True]


def test_after_training_began_a_set_whose_proto_responses_exist_nowhere_is_refused(tmp_path, tokenizer, model):
    context, responses, evaluation, _ = service(tmp_path, tokenizer, model)
    context.start_iteration(IterationPoint(1, global_step=4))  # iteration 1 trains with the proto term
    with pytest.raises(SelfPlayError, match="Cannot evaluate 'held_out' now"):
        evaluation.prepare("held_out", eval_set(tokenizer, offset=70), global_step=5)
    assert responses.generate_calls == 0


def test_after_training_began_the_current_policy_samples_and_the_cache_gives_proto(tmp_path, tokenizer, model):
    context, responses, evaluation, _ = service(tmp_path, tokenizer, model)
    evaluation.prepare("eval", eval_set(tokenizer), global_step=0)  # the initial policy samples (and caches) proto
    context.start_iteration(IterationPoint(1, global_step=4))
    dataset = eval_set(tokenizer)
    evaluation.prepare("eval", dataset, global_step=5)
    passes = sorted(responses.generation_stats)
    assert [key.split("-")[0] for key in passes] == ["eval", "proto/eval"] and responses.generate_calls == 2
    assert dataset.include_proto and dataset.has("proto") and dataset.has("synthetic")
    assert dataset.column("synthetic_ids") != dataset.column("proto_ids"), "sampled from the current policy"
    assert list((tmp_path / "self_play" / "evaluate" / "step_5").glob("eval-*.jsonl"))
