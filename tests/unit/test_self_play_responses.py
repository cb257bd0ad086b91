"""`ResponseMaker`: proto responses from an earlier iteration's file, the proto cache or the initial policy (then
cached, and refused once the policy has trained); synthetic responses under each iteration's seed; the previous
iteration's responses; reference log-probs where the objective uses them."""

import pytest
from datasets import Dataset

from tests.support import make_context, model_logps, sorting_rows
from tspin_trl.clock import IterationPoint
from tspin_trl.data import TripletTokenizer, check_columns, eos_token_ids, tokenize_dataset
from tspin_trl.self_play import IterationFiles, ResponseMaker, SelfPlayError


def triplets(tokenizer, n: int = 4, mix_previous: bool = False):
    rows = Dataset.from_list(sorting_rows(n))
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer), max_completion_length=10)
    return tokenize_dataset(rows, check_columns(rows, "train"), encode, "train", mix_previous=mix_previous)


def maker(tmp_path, tokenizer, model, **config):
    context, _ = make_context(tmp_path, tokenizer, model, steps_per_epoch=2, generation_batch_size=4, **config)
    files = IterationFiles(context.folder, context.vocab_size, identity_digest="this-run")
    return context, files, ResponseMaker(context, files)


START = IterationPoint(0, global_step=0, at_start=True)


def test_proto_responses_are_sampled_once_from_the_initial_policy_then_come_from_the_cache(tmp_path, tokenizer, model):
    _, _, responses = maker(tmp_path / "a", tokenizer, model)
    dataset = triplets(tokenizer)
    responses.proto("train", dataset, START)
    assert responses.generate_calls == 1 and sorted(responses.generation_stats) == ["proto/train"]
    sampled = dataset.column("proto_ids")
    assert all(ids and max(ids) < len(tokenizer) for ids in sampled)

    _, _, again = maker(tmp_path / "b", tokenizer, model)  # another run of the same model, prompts and sampling
    fresh = triplets(tokenizer)
    again.proto("train", fresh, START)
    assert again.generate_calls == 0 and fresh.column("proto_ids") == sampled, "from the proto cache"


def test_proto_responses_come_from_an_earlier_iteration_file_first(tmp_path, tokenizer, model):
    _, files, responses = maker(tmp_path, tokenizer, model, use_proto_cache=False)
    dataset = triplets(tokenizer)
    stored = [[5 + i, 6] for i in range(len(dataset.examples))]
    dataset.set_column("proto_ids", stored)
    files.write_iteration(0, "train", dataset, tokenizer, meta={})
    fresh = triplets(tokenizer)
    responses.proto("train", fresh, IterationPoint(1, global_step=4))
    assert fresh.column("proto_ids") == stored and responses.generate_calls == 0


def test_proto_responses_are_refused_once_the_policy_has_trained(tmp_path, tokenizer, model):
    _, _, responses = maker(tmp_path, tokenizer, model)
    with pytest.raises(SelfPlayError, match="must come from the initial policy"):
        responses.proto("train", triplets(tokenizer), IterationPoint(1, global_step=4))
    assert responses.generate_calls == 0


def test_synthetic_responses_are_sampled_under_each_iterations_seed(tmp_path, tokenizer, model):
    _, _, responses = maker(tmp_path, tokenizer, model)
    dataset = triplets(tokenizer)
    seeds = [responses.iteration_seed(t) for t in range(3)]
    assert len(set(seeds)) == 3
    first = responses.synthetic(IterationPoint(1, 4), "train", dataset)
    assert responses.synthetic(IterationPoint(1, 4), "train", dataset) == first, "the same iteration, the same draw"
    assert responses.synthetic(IterationPoint(2, 8), "train", dataset) != first
    assert sorted(responses.generation_stats) == ["iteration_1/train", "iteration_2/train"]
    only = responses.synthetic(IterationPoint(1, 4), "train", dataset, indices=[3, 1])
    assert len(only) == 2 and responses.generation_stats["iteration_1/train"].num_prompts == 2


def test_the_previous_iterations_responses(tmp_path, tokenizer, model):
    _, files, responses = maker(tmp_path, tokenizer, model, mix_previous_iteration=True, objective="spin")
    dataset = triplets(tokenizer, mix_previous=True)
    dataset.set_column("synthetic_ids", [[7]] * 4)
    assert responses.previous_synthetic(0, "train", dataset) == [[7]] * 4, "iteration 0 has no predecessor"
    with pytest.raises(SelfPlayError, match="mix_previous_iteration needs iteration 0's responses"):
        responses.previous_synthetic(1, "train", dataset)
    files.write_iteration(0, "train", dataset, tokenizer, meta={})
    dataset.set_column("synthetic_ids", [[8]] * 4)
    assert responses.previous_synthetic(1, "train", dataset) == [[7]] * 4


@pytest.mark.parametrize("objective", ["spin", "tspin_ref", "tspin"])
def test_reference_logps_are_the_current_policys_where_the_objective_uses_them(tmp_path, tokenizer, model, objective):
    _, _, responses = maker(tmp_path, tokenizer, model, objective=objective, num_iterations=2)
    dataset = triplets(tokenizer)
    dataset.set_column("synthetic_ids", [[10, 11, 12]] * 4)
    dataset.set_column("proto_ids", [[13, 14]] * 4)
    responses.reference_logps(1, dataset)
    expected = model_logps(model)(dataset, ("real", "synthetic", "proto"))
    roles = {"spin": ("real", "synthetic"), "tspin_ref": ("real", "synthetic", "proto"), "tspin": ()}[objective]
    for role in ("real", "synthetic", "proto"):
        if role in roles:
            assert dataset.column(f"ref_{role}_logps") == pytest.approx(expected[role])
        else:
            assert not any(dataset.column(f"ref_{role}_logps")), f"{objective} needs no reference {role} log-probs"
