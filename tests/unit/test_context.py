"""`RunContext`: built by one factory, and changed after construction only by its owners (`start_train`,
`start_iteration`, the clock's `enter`)."""

import pytest
from accelerate import Accelerator

from tests.support import make_config, make_context, model_logps, sorting_rows
from tspin_trl.clock import IterationClock, IterationPoint
from tspin_trl.context import RunContext, clock_and_policy
from tspin_trl.generation import HFGenerationBackend, SamplingSettings
from tspin_trl.metrics import MetricsLog


def build(tmp_path, tokenizer, model, **config):
    args = make_config(tmp_path, **config)
    started = []
    context = RunContext.build(
        args,
        Accelerator(cpu=True),
        model,
        tokenizer,
        metrics=MetricsLog(),
        sampled_model=lambda: model,
        backend_factory=HFGenerationBackend,
        compute_logps=model_logps(model),
        own_synthetic=True,
        on_iteration_start=started.append,
    )
    return context, started


def test_the_factory_builds_every_part_from_the_settings(tmp_path, tokenizer, model):
    context, _ = build(tmp_path, tokenizer, model, num_iterations=3, epochs_per_iteration=2, objective="tspin_ref")
    assert (context.clock.num_iterations, context.clock.num_train_epochs) == (3, 6)
    assert context.clock.current is None and context.clock.steps_per_iteration is None
    assert context.policy.objective == "tspin_ref" and context.policy.own_synthetic
    assert context.policy.beta_for(0) == context.args.beta, "the dataset brings its synthetic responses"
    assert context.folder.output_dir == str(tmp_path)
    assert context.vocab_size == len(tokenizer) == model.config.vocab_size
    assert context.eos_token_ids == [tokenizer.eos_token_id]
    assert set(context.initial_identity) == {"initial_model", "tokenizer"}
    assert context.resumed_from_checkpoint is None


def test_the_tests_context_comes_from_the_same_factory(tmp_path, tokenizer, model):
    built, _ = build(tmp_path / "a", tokenizer, model)
    context, logged = make_context(tmp_path / "b", tokenizer, model, steps_per_epoch=4)
    assert type(context.clock) is type(built.clock) and context.policy == clock_and_policy(context.args, False)[1]
    assert context.initial_identity == built.initial_identity, "the same initial model and tokenizer"
    assert context.clock.steps_per_iteration == 4
    context.metrics.log_now({"x": 1.0}, iteration=0)
    assert logged == [{"x": 1.0, "self_play/iteration": 0}]


def test_start_train_rebuilds_the_clock_and_policy_from_changed_settings(tmp_path, tokenizer, model):
    context, _ = build(tmp_path, tokenizer, model, num_iterations=2)
    context.clock.set_steps_per_epoch(4)
    context.start_iteration(IterationPoint(1, global_step=4))
    old_clock = context.clock
    context.args.num_iterations = 3
    context.args.beta = 0.5
    context.start_train(resumed_from_checkpoint="checkpoint-4")
    assert context.clock is not old_clock and context.clock.num_iterations == 3
    assert context.clock.current is None and context.clock.steps_per_iteration is None, "a fresh clock"
    assert context.policy.beta_for(1) == 0.5 and context.policy.own_synthetic, "own_synthetic is the data's, kept"
    assert context.resumed_from_checkpoint == "checkpoint-4"
    context.start_train()
    assert context.resumed_from_checkpoint is None


def test_starting_an_iteration_moves_the_clock_and_calls_the_trainers_hook(tmp_path, tokenizer, model):
    context, started = build(tmp_path, tokenizer, model, num_iterations=2)
    context.clock.set_steps_per_epoch(4)
    point = context.clock.point(1, global_step=4)
    assert (point.begun, point.at_start) == (False, True)
    context.start_iteration(point)
    assert context.clock.current == 1 and started == [point]
    assert context.clock.point(1, global_step=5) == IterationPoint(1, 5, begun=True, at_start=False)
    with pytest.raises(AttributeError):
        context.clock.current = 0  # the clock's `enter` is its only writer


def test_the_clock_is_the_only_writer_of_its_current_iteration():
    clock = IterationClock(num_iterations=2, epochs_per_iteration=1)
    clock.enter(1)
    assert clock.current == 1
    with pytest.raises(AttributeError):
        clock.current = None


def test_the_sampler_reads_the_batch_size_when_it_samples(tmp_path, tokenizer, model):
    context, _ = build(tmp_path, tokenizer, model, generation_batch_size=2)
    prompts = [tokenizer(row["prompt"])["input_ids"] for row in sorting_rows(4, conversational=False)]
    greedy = SamplingSettings.greedy(max_new_tokens=3)
    _, stats = context.sampler.generate(prompts, greedy)
    assert stats.generate_calls == 2
    context.args.generation_batch_size = 4  # changed on `trainer.args`: the next pass uses it
    _, stats = context.sampler.generate(prompts, greedy)
    assert stats.generate_calls == 1
    context.sampler.close()


def test_a_dataset_without_synthetic_responses_gives_a_policy_that_samples_them(tmp_path):
    args = make_config(tmp_path, num_iterations=2)
    clock, policy = clock_and_policy(args, own_synthetic=False)
    assert clock.num_iterations == 2 and not policy.own_synthetic
    assert policy.synthetic_source(0) == "proto" and policy.beta_for(0) == args.beta_first_iteration


def test_the_samplers_progress_bar_follows_disable_tqdm(tmp_path, tokenizer, model, capsys):
    context, _ = build(tmp_path, tokenizer, model, disable_tqdm=True)
    prompts = [tokenizer(row["prompt"])["input_ids"] for row in sorting_rows(2, conversational=False)]
    context.sampler.generate(prompts, SamplingSettings.greedy(max_new_tokens=2), description="silent pass")
    assert "silent pass" not in capsys.readouterr().err
    context.args.disable_tqdm = False  # read at each pass, as the batch size is
    context.sampler.generate(prompts, SamplingSettings.greedy(max_new_tokens=2), description="shown pass")
    assert "shown pass" in capsys.readouterr().err
    context.sampler.close()
