"""Every self-play iteration runs as its own fine-tuning run (one `train()` equals one run per iteration, also after a
resume), and is reported from all of its steps (logging windows, alarms, SPIN's data mixing)."""

import json
import shutil

import pytest
import torch
from datasets import Dataset

from tests.support import iteration_rows, make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


NUM_ITERATIONS = 3


DATA_SEED = 11


def plain_rows(n: int = 8) -> list[dict]:
    return sorting_rows(n, conversational=False)


def oracle_config(output_dir, tokenizer, **overrides):
    """Settings under which a response survives decode -> re-encode exactly: every generated response ends with the
    eos token (forced at the last position), no other special token is sampled."""
    eos = tokenizer.eos_token_id
    others = [i for i, token in tokenizer.added_tokens_decoder.items() if token.special and i != eos]
    config = dict(
        num_iterations=NUM_ITERATIONS,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,  # 8 rows -> 2 optimizer steps per iteration, each accumulating 2 batches
        generation_batch_size=4,
        warmup_steps=0.5,  # one warm-up step per iteration: the schedule must restart
        learning_rate=1e-3,
        beta=0.1,
        data_seed=DATA_SEED,
        generation_kwargs={"forced_eos_token_id": eos, "suppress_tokens": others},
        save_strategy="steps",
        save_steps=1,
    )
    return make_config(output_dir, **(config | overrides))


def parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from tspin_trl.demo.presets import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    output_dir = tmp_path_factory.mktemp("full")
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=oracle_config(output_dir, tokenizer),
        train_dataset=Dataset.from_list(plain_rows()),
        processing_class=tokenizer,
    )
    trainer.train()
    return tokenizer, output_dir, trainer


def run_separately(tmp_path, tokenizer, full_dir) -> tuple[torch.nn.Module, list[float]]:
    """The oracle: one single-iteration `train()` per iteration, each starting from the previous call's model, with
    that iteration's synthetic and proto responses given as dataset columns."""
    model = build_tiny_model(tokenizer)
    learning_rates = []
    for iteration in range(NUM_ITERATIONS):
        responses = iteration_rows(full_dir, iteration)
        rows = [
            row | {"synthetic": r["synthetic"], "proto": r["proto"]}
            for row, r in zip(plain_rows(), responses, strict=True)
        ]
        trainer = TSPINTrainer(
            model=model,
            args=oracle_config(
                tmp_path / f"separate_{iteration}",
                tokenizer,
                num_iterations=1,
                beta=0.0 if iteration == 0 else 0.1,  # the historical term is off in iteration 0
                data_seed=DATA_SEED + iteration,  # the full run's epoch `iteration` shuffles with this seed
                save_strategy="no",
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        trainer.train()
        learning_rates += [h["learning_rate"] for h in trainer.state.log_history if "loss" in h]
        model = trainer.model
    return model, learning_rates


def test_one_train_equals_one_run_per_iteration(tmp_path, full_run):
    tokenizer, full_dir, full = full_run
    # the responses survive decode -> re-encode, so the oracle trains on exactly the same token ids
    for iteration in range(NUM_ITERATIONS):
        for r in iteration_rows(full_dir, iteration):
            assert (
                tokenizer(r["synthetic"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                == r["synthetic_ids"]
            )
    oracle, oracle_lrs = run_separately(tmp_path, tokenizer, full_dir)
    full_lrs = [h["learning_rate"] for h in full.state.log_history if "loss" in h]
    assert full_lrs == pytest.approx(oracle_lrs)
    assert full_lrs == pytest.approx([0.0, 1e-3] * NUM_ITERATIONS)  # warm-up, then linear decay, in every iteration
    torch.testing.assert_close(parameters(full.model), parameters(oracle), rtol=1e-5, atol=1e-6)


def test_resume_in_the_middle_of_iteration_1_equals_the_oracle(tmp_path, full_run):
    tokenizer, full_dir, full = full_run
    # the state of a run interrupted after step 3 (iteration 1 covers steps 3-4): its checkpoint and the responses of
    # iterations 0 and 1 only
    interrupted = tmp_path / "interrupted"
    shutil.copytree(full_dir, interrupted)
    for path in list(interrupted.glob("checkpoint-*")):
        if int(path.name.split("-")[1]) > 3:
            shutil.rmtree(path)
    shutil.rmtree(interrupted / "self_play" / "iteration_2")
    resumed = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=oracle_config(interrupted, tokenizer),
        train_dataset=Dataset.from_list(plain_rows()),
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.self_play.generation_stats.keys() == {"iteration_2/train"}
    torch.testing.assert_close(parameters(resumed.model), parameters(full.model), rtol=1e-5, atol=1e-6)
    # the resumed iteration's summary covers both of its steps, the one before the resume included
    records = resumed.run_folder.iteration_records()
    assert (records[1]["first_step"], records[1]["last_step"]) == (3, 4)
    full_records = full.run_folder.iteration_records()
    for key in ("logps/real", "logps/synthetic", "advantage/current"):
        assert records[1]["means"][key] == pytest.approx(full_records[1]["means"][key], rel=1e-5)
    # every step is logged once in logs.jsonl, even though the resume replayed the logging of step 3
    steps = [r["step"] for r in map(json.loads, (interrupted / "self_play" / "logs.jsonl").open()) if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 2 * NUM_ITERATIONS + 1))


def test_single_schedule_is_kept_as_an_option(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(
            tmp_path,
            num_iterations=2,
            per_device_train_batch_size=2,
            restart_each_iteration=False,
            optim="adamw_torch",
        ),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
    )
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "loss" in h]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert not any("self_play/optimizer_states_reset" in h for h in trainer.state.log_history)


def test_a_logging_window_longer_than_an_iteration_keeps_every_iterations_summary(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=2, logging_steps=100),
        train_dataset=Dataset.from_list(sorting_rows(8)),
        processing_class=tokenizer,
    )
    trainer.train()
    # as DPOTrainer's: no training entry (8 steps < logging_steps), the summary carries the pending averaged metrics
    assert len(trainer.state.log_history) == 1
    summary = trainer.state.log_history[0]
    assert "train_runtime" in summary and "loss" not in summary
    records = trainer.run_folder.iteration_records()
    assert [(r["first_step"], r["last_step"], r["complete"]) for r in records.values()] == [(1, 4, True), (5, 8, True)]
    # both iterations' summaries ride on it: the latest under its name, the earlier one under `<name>/iteration_0`
    means = [records[t]["means"]["logps/real"] for t in (0, 1)]
    assert summary["iteration/logps/real"] == pytest.approx(means[1], rel=1e-5)
    assert summary["iteration/logps/real/iteration_0"] == pytest.approx(means[0], rel=1e-5)
    assert summary["self_play/advantage_vanished/iteration_0"] == 0.0 == summary["self_play/advantage_vanished"]
    # the window's mean over all 8 steps is the mean of the two iterations' (4 steps each)
    assert summary["logps/real"] == pytest.approx(sum(means) / 2, rel=1e-5)


def test_spin_with_identical_pairs_has_no_wins_and_no_disagreement(tmp_path, tokenizer):
    rows = [r | {"synthetic": r["completion"]} for r in sorting_rows(4, conversational=False)]
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, objective="spin", alpha=0.1, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    lines = [h for h in trainer.state.log_history if "loss" in h]
    assert lines and all(h["rewards/disagreement"] == 0.0 for h in lines)
    assert all(h["advantage/current_accuracy"] == 0.0 for h in lines)
    assert all(h["self_play/synthetic_equals_real"] == 1.0 and h["rewards/ties"] == 0.0 for h in lines)


def test_saturation_alarm(tmp_path, tokenizer, caplog):
    junk = "x" * 30  # a synthetic response far less likely than the real one: scaled advantages far above 10
    rows = [r | {"synthetic": junk, "proto": junk} for r in sorting_rows(4, conversational=False)]

    def run(name, alpha):
        trainer = TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path / name, alpha=alpha, per_device_train_batch_size=2, learning_rate=1e-5),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        with caplog.at_level("WARNING"):
            trainer.train()
        return trainer

    saturated = run("saturated", alpha=1.0)
    assert saturated.monitor.alarms["saturated"] == [0]
    assert "teaches almost nothing" in caplog.text
    assert run("scaled_down", alpha=0.01).monitor.alarms["saturated"] == []


def test_spin_data_mixing_trains_on_this_and_the_previous_iteration(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(
            tmp_path,
            objective="spin",
            alpha=0.1,
            num_iterations=2,
            per_device_train_batch_size=2,
            generation_batch_size=4,
            mix_previous_iteration=True,
        ),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
    )
    dataset = trainer.train_dataset
    assert len(dataset) == 8  # two rows per prompt in every iteration: the step count never changes
    trainer.train()
    assert trainer.state.global_step == 8
    rows = iteration_rows(tmp_path, 1)
    previous = iteration_rows(tmp_path, 0)
    assert [r["previous_synthetic_ids"] for r in rows] == [r["synthetic_ids"] for r in previous]
    assert all("ref_previous_synthetic_logps" in r for r in rows)
    # row i + N of the dataset is prompt i with the previous iteration's synthetic response and its reference log-prob
    item = dataset[4]
    assert item["synthetic_ids"] == rows[0]["previous_synthetic_ids"]
    assert item["ref_synthetic_logps"] == rows[0]["ref_previous_synthetic_logps"]
    assert dataset[0]["synthetic_ids"] == rows[0]["synthetic_ids"]


def test_vanishing_advantage_alarm(tmp_path, tokenizer, caplog):
    rows = [r | {"synthetic": r["completion"], "proto": "0 0"} for r in sorting_rows(8, conversational=False)]
    trainer = self_play_trainer(tmp_path / "vanished", tokenizer, rows=rows, num_iterations=1)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert trainer.monitor.alarms["vanishing"] == [0]
    assert "current advantage has vanished" in caplog.text
    vanished = [h for h in trainer.state.log_history if "self_play/advantage_vanished" in h]
    # the last iteration's summary rides on the train summary
    assert [("train_runtime" in h, h["self_play/advantage_vanished"]) for h in vanished] == [(True, 1.0)]

    normal = self_play_trainer(tmp_path / "normal", tokenizer, num_iterations=2)
    normal.train()
    assert normal.monitor.alarms["vanishing"] == []
    finals = [h for h in normal.state.log_history if "self_play/advantage_vanished" in h]
    # iteration 0's on the first training entry of iteration 1 (step 5), iteration 1's on the train summary
    assert [(h["step"], "loss" in h, h["self_play/advantage_vanished"]) for h in finals] == [
        (5, True, 0.0),
        (8, False, 0.0),
    ]
