"""`SelfPlayCallback`, the schedule, driven directly (no trainer): which iteration an epoch loads, an iteration file
loaded instead of built, a resume inside an iteration refused without its file, the held-out evidence measured before
training, after each iteration and once at the end (not again by a resume inside an iteration)."""

import pytest
from datasets import Dataset
from transformers import TrainerControl, TrainerState

from tests.support import make_context, sorting_rows
from tspin_trl.data import TripletTokenizer, check_columns, eos_token_ids, tokenize_dataset
from tspin_trl.self_play import SelfPlayCallback, SelfPlayError


def triplets(tokenizer, n: int = 4, offset: int = 0):
    rows = Dataset.from_list(sorting_rows(n, offset=offset))
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer), max_completion_length=10)
    return tokenize_dataset(rows, check_columns(rows, "train"), encode, "train")


# 2 iterations of 2 epochs of 2 steps: iteration 1 is epochs 2 and 3, steps 5 to 8
SCHEDULE = dict(num_iterations=2, epochs_per_iteration=2, generation_batch_size=4)


def schedule(tmp_path, tokenizer, model, eval_set: bool = False):
    context, logged = make_context(tmp_path, tokenizer, model, steps_per_epoch=2, **SCHEDULE)
    datasets = {"train": triplets(tokenizer)} | ({"eval": triplets(tokenizer, 2, offset=50)} if eval_set else {})
    return context, logged, datasets, SelfPlayCallback(context, datasets)


def at(epoch: float | None, global_step: int) -> TrainerState:
    return TrainerState(epoch=epoch, global_step=global_step)


def test_each_epoch_loads_the_iteration_it_belongs_to(tmp_path, tokenizer, model):
    context, _, datasets, callback = schedule(tmp_path, tokenizer, model)
    train, control = datasets["train"], TrainerControl()
    callback.on_train_begin(context.args, at(None, 0), control)
    assert callback.loaded_iteration == context.clock.current == 0
    assert sorted(callback.generation_stats) == ["proto/train"], "iteration 0 trains on the initial policy's samples"
    assert train.column("synthetic_ids") == train.column("proto_ids") and not train.include_proto, "beta 0"
    callback.on_epoch_begin(context.args, at(1.0, 2), control)
    assert sorted(callback.generation_stats) == ["proto/train"], "epoch 1 is still iteration 0: nothing made"
    callback.on_epoch_begin(context.args, at(2.0, 4), control)
    assert callback.loaded_iteration == context.clock.current == 1 and train.include_proto
    assert sorted(callback.generation_stats) == ["iteration_1/train", "proto/train"]
    assert train.column("synthetic_ids") != train.column("proto_ids"), "sampled again from the current policy"
    callback.on_epoch_begin(context.args, at(3.0, 6), control)
    assert callback.generation_stats["iteration_1/train"].generate_calls == 1, "epoch 3 is still iteration 1"
    callback.on_train_end(context.args, at(4.0, 8), control)
    records = context.folder.iteration_records()
    assert [(t, r["step"], r["beta"]) for t, r in records.items()] == [(0, 0, 0.0), (1, 4, context.args.beta)]
    for iteration in (0, 1):
        assert callback.files.read(iteration, "train", len(train.examples)) is not None, "written, this run's"


def test_an_iteration_file_is_loaded_instead_of_built(tmp_path, tokenizer, model):
    context, _, datasets, callback = schedule(tmp_path, tokenizer, model)
    callback.on_train_begin(context.args, at(None, 0), TrainerControl())
    callback.on_epoch_begin(context.args, at(2.0, 4), TrainerControl())
    trained_on = datasets["train"].column("synthetic_ids")
    records = context.folder.iteration_records()

    # a resume from a checkpoint inside iteration 1: a new callback over the data as given
    resumed_context, _, resumed_data, resumed = schedule(tmp_path, tokenizer, model)
    resumed.on_train_begin(resumed_context.args, at(2.5, 5), TrainerControl())
    assert resumed.loaded_iteration == 1 and resumed.generate_calls == 0, "loaded from iteration 1's file"
    assert resumed_data["train"].column("synthetic_ids") == trained_on
    assert resumed_data["train"].column("proto_ids") == datasets["train"].column("proto_ids")
    assert resumed_context.folder.iteration_records() == records, "re-entering an iteration records nothing"


def test_a_resume_inside_an_iteration_refuses_a_missing_file_and_one_at_its_start_rebuilds_it(
    tmp_path, tokenizer, model
):
    context, _, _, callback = schedule(tmp_path, tokenizer, model)
    callback.on_train_begin(context.args, at(None, 0), TrainerControl())
    callback.on_epoch_begin(context.args, at(2.0, 4), TrainerControl())
    data_path, _ = context.folder.iteration_files(1, "train")
    (tmp_path / data_path).unlink()

    resumed_context, _, _, resumed = schedule(tmp_path, tokenizer, model)
    with pytest.raises(SelfPlayError, match="Training of iteration 1 has begun, but its responses"):
        resumed.on_train_begin(resumed_context.args, at(2.5, 5), TrainerControl())

    at_start_context, _, data, at_start = schedule(tmp_path, tokenizer, model)
    at_start.on_train_begin(at_start_context.args, at(2.0, 4), TrainerControl())
    assert at_start.loaded_iteration == 1
    assert sorted(at_start.generation_stats) == ["iteration_1/train"], "proto from iteration 0's file, not sampled"
    assert at_start.files.read(1, "train", len(data["train"].examples)) is not None


def test_the_inversion_is_measured_before_training_after_each_iteration_and_once_at_the_end(
    tmp_path, tokenizer, model
):
    context, logged, _, callback = schedule(tmp_path, tokenizer, model, eval_set=True)
    control = TrainerControl()
    callback.on_train_begin(context.args, at(None, 0), control)
    callback.on_epoch_begin(context.args, at(2.0, 4), control)
    callback.on_epoch_end(context.args, at(3.0, 6), control)
    measured = [line for line in logged if "self_play/likelihood_inversion" in line]
    assert [line.get("self_play/iteration") for line in measured] == [None, 0], "before training, after iteration 0"
    for _ in range(2):  # the last epoch ends, then training ends: measured once
        callback.on_epoch_end(context.args, at(4.0, 8), control)
    measured = [line for line in logged if "self_play/likelihood_inversion" in line]
    assert [line.get("self_play/iteration") for line in measured] == [None, 0, 1]
    assert [line["label"] for line in context.folder.heldout()] == ["start", "iteration_0", "iteration_1"]
    assert "final/eval" in callback.generation_stats, "after the last iteration, one more sampling pass"
    assert all(0.0 <= line["self_play/likelihood_inversion"] <= 1.0 for line in measured)


def test_a_second_train_starts_from_the_data_as_given(tmp_path, tokenizer, model):
    context, _, datasets, callback = schedule(tmp_path, tokenizer, model)
    callback.on_train_begin(context.args, at(None, 0), TrainerControl())
    callback.on_epoch_begin(context.args, at(2.0, 4), TrainerControl())
    first_identity = callback.identity_digest
    callback.on_train_begin(context.args, at(2.5, 5), TrainerControl())  # the same object, resumed in iteration 1
    assert callback.loaded_iteration == 1 and callback.identity_digest == first_identity
    assert datasets["train"].has("proto") and callback.selections == {}


def test_an_iteration_file_whose_selection_contradicts_its_margins_is_not_used(tmp_path, tokenizer, model, caplog):
    from tspin_trl.checked_io import read_checked_jsonl, write_checked_jsonl

    selecting = SCHEDULE | {"prompt_selection_threshold": 5.0, "prompt_selection_min_share": 0.25}

    def run(folder):
        context, _ = make_context(folder, tokenizer, model, steps_per_epoch=2, **selecting)
        return context, SelfPlayCallback(context, {"train": triplets(tokenizer)})

    context, callback = run(tmp_path)
    callback.on_train_begin(context.args, at(None, 0), TrainerControl())
    callback.on_epoch_begin(context.args, at(2.0, 4), TrainerControl())  # iteration 1 selects its prompts
    data_path, meta_path = context.folder.iteration_files(1, "train")
    rows, meta = read_checked_jsonl(data_path, meta_path)
    kept = [row["selected"] for row in rows]
    flip = kept.index(True) if sum(kept) > 1 else kept.index(False)
    rows[flip]["selected"] = not rows[flip]["selected"]
    write_checked_jsonl(data_path, meta_path, rows, meta)  # a forged file: checksum, identity and count all right

    resumed_context, resumed = run(tmp_path)
    with caplog.at_level("WARNING", logger="tspin_trl.self_play.callback"):
        with pytest.raises(SelfPlayError, match="Training of iteration 1 has begun, but its responses"):
            resumed.on_train_begin(resumed_context.args, at(2.5, 5), TrainerControl())
    assert (
        f"its prompt selection contradicts its margins (threshold 5, min_share 0.25) in 1 rows: {flip} ("
        in caplog.text
    )


def test_a_resume_inside_an_iteration_does_not_measure_the_previous_one_again(tmp_path, tokenizer, model):
    """The policy has moved on since iteration 0 ended: its held-out evidence stays as measured then."""
    context, _, _, callback = schedule(tmp_path, tokenizer, model, eval_set=True)
    callback.on_train_begin(context.args, at(None, 0), TrainerControl())
    callback.on_epoch_begin(context.args, at(2.0, 4), TrainerControl())
    measured = context.folder.heldout()
    resumed_context, resumed_logged, _, resumed = schedule(tmp_path, tokenizer, model, eval_set=True)
    resumed.on_train_begin(resumed_context.args, at(2.5, 5), TrainerControl())
    assert resumed.loaded_iteration == 1 and not [line for line in resumed_logged if "self_play/heldout" in str(line)]
    assert resumed_context.folder.heldout() == measured and [r["label"] for r in measured] == ["start", "iteration_0"]
