"""`tspin_trl/generation.py`: the chunk store of checkpointed generation, and `generate_responses`: responses in
prompt order, chunks of longest prompts first, sharding over processes (every process makes the same number of
`generate` calls), and a pass killed midway resumed at its first missing chunk."""

import threading
from contextlib import contextmanager

import pytest
import torch
from accelerate import Accelerator

from tests.support import sorting_rows, tiny_moe
from tspin_trl import generation
from tspin_trl.generation import ChunkStore, SamplingSettings, generate_responses


def test_chunks_and_manifest_are_checksummed_and_validated(tmp_path):
    chunks = [[0, 1], [2, 3]]
    store = ChunkStore(str(tmp_path), "key", vocab_size=10)
    assert store.load(chunks) == {}
    store.write(0, [(0, [1, 2]), (1, [3])])
    store.write(1, [(2, [4]), (3, [5, 6])])
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0, 1]
    # a forged chunk of the right length: its checksum no longer matches the manifest
    (tmp_path / "chunk_00001.jsonl").write_text("[2, []]\n[3, []]\n")
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0]
    # garbage in the manifest: every chunk is discarded, nothing crashes
    (tmp_path / "manifest.json").write_text("{not json")
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}
    # ids outside the vocabulary, with a matching checksum
    store = ChunkStore(str(tmp_path), "key", 10)
    store.load(chunks)
    store.write(0, [(0, [99]), (1, [3])])
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}


EOS, PAD = 2, 0


class EchoBackend:
    """A generation backend whose completion of a prompt is known: the prompt reversed, an eos token, then two tokens
    that must be cut. It records every `generate` call (seed and batch)."""

    chunk_key = None

    def __init__(self):
        self.calls: list[tuple[int, list[list[int]]]] = []

    @contextmanager
    def session(self, model, accelerator):
        yield

    def default_batch_size(self, prompt_length, max_new_tokens):
        return 3

    def generate(self, prompts, sampling, *, seed, pad_token_id, eos_ids):
        self.calls.append((seed, [list(p) for p in prompts]))
        return [list(reversed(p)) + [eos_ids[0], 7, 7] for p in prompts]

    def close(self):
        pass


def echoed(prompt: list[int]) -> list[int]:
    return list(reversed(prompt)) + [EOS]


PROMPTS = [[10, 11], [20, 21, 22, 23, 24], [30, 31, 32], [40, 41, 42, 43, 44], [50], [60, 61, 62, 63], [70, 71]]


def test_responses_come_back_in_prompt_order_from_chunks_of_the_longest_prompts_first():
    backend = EchoBackend()
    responses, stats = generate_responses(
        None, Accelerator(cpu=True), PROMPTS, sampling=SamplingSettings(max_new_tokens=8), pad_token_id=PAD,
        eos_ids=[EOS], batch_size=2, seed=10, backend=backend,
    )  # fmt: skip
    assert responses == [echoed(p) for p in PROMPTS], "cut after the eos token, in the order of the prompts"
    batches = [batch for _, batch in backend.calls]
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    lengths = [len(p) for batch in batches for p in batch]
    assert lengths == sorted(lengths, reverse=True), "longest prompts first, so that a batch pads little"
    assert [seed for seed, _ in backend.calls] == [10, 11, 12, 13], "each chunk under its own seed"
    assert (stats.num_prompts, stats.generate_calls, stats.num_eos, stats.num_truncated) == (7, 4, 7, 0)
    assert stats.generated_tokens == stats.num_tokens == sum(len(p) + 1 for p in PROMPTS)


def test_an_unset_batch_size_is_the_backends_choice():
    backend = EchoBackend()
    generate_responses(
        None, Accelerator(cpu=True), PROMPTS, sampling=SamplingSettings(max_new_tokens=8), pad_token_id=PAD,
        eos_ids=[EOS], backend=backend,
    )  # fmt: skip
    assert [len(batch) for _, batch in backend.calls] == [3, 3, 1]


@pytest.mark.parametrize("show_progress", [True, False])
def test_the_progress_bar_shows_unless_switched_off(capsys, show_progress):
    """`disable_tqdm=True` silences the generation passes' bars as it does the Trainer's (the trainer passes
    `show_progress=not args.disable_tqdm`)."""
    generate_responses(
        None, Accelerator(cpu=True), PROMPTS, sampling=SamplingSettings(max_new_tokens=8), pad_token_id=PAD,
        eos_ids=[EOS], batch_size=2, backend=EchoBackend(), description="proto pass", show_progress=show_progress,
    )  # fmt: skip
    assert ("proto pass" in capsys.readouterr().err) is show_progress


class Exchange:
    """What two processes tell each other, simulated by two threads: every one gives a value, every one gets all."""

    def __init__(self, world: int):
        self.barrier = threading.Barrier(world)
        self.values: dict[int, object] = {}
        self.local = threading.local()

    def all(self, value):
        self.values[self.local.rank] = value
        self.barrier.wait()
        values = [self.values[rank] for rank in sorted(self.values)]
        self.barrier.wait()  # everyone has read before the next exchange overwrites
        return values


class SimulatedProcess:
    """The part of `Accelerator` that `generate_responses` uses, for process `rank` of `world` (threads)."""

    def __init__(self, exchange: Exchange, rank: int, world: int):
        self.exchange, self.process_index, self.num_processes = exchange, rank, world
        self.is_main_process = rank == 0
        self.device = torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        assert reduction == "sum"
        return sum(self.exchange.all(tensor))


def test_prompts_are_sharded_over_processes_which_all_make_the_same_calls_and_get_every_response(monkeypatch):
    world, prompts = 2, PROMPTS[:5]  # chunks of 2 x 2 prompts: [4 prompts], [1 prompt]: process 1 has none left
    exchange = Exchange(world)
    monkeypatch.setattr(
        generation, "gather_object", lambda local: [item for part in exchange.all(local) for item in part]
    )
    backends = [EchoBackend() for _ in range(world)]
    results: dict[int, tuple] = {}

    def process(rank: int) -> None:
        exchange.local.rank = rank
        results[rank] = generate_responses(
            None, SimulatedProcess(exchange, rank, world), prompts, sampling=SamplingSettings(max_new_tokens=8),
            pad_token_id=PAD, eos_ids=[EOS], batch_size=2, seed=100, backend=backends[rank],
        )  # fmt: skip

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [echoed(p) for p in prompts]
    assert results[0][0] == results[1][0] == expected, "every process gets every response, in prompt order"
    assert len(backends[0].calls) == len(backends[1].calls) == 2, "the same number of `generate` calls (ZeRO-3)"
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    assert backends[0].calls[0][1] == [prompts[i] for i in order[0:4:2]]
    assert backends[1].calls[0][1] == [prompts[i] for i in order[1:4:2]]
    assert backends[1].calls[1][1] == [prompts[order[4]]], (
        "nothing left: it repeats the chunk's prompt, result dropped"
    )
    assert [seed for seed, _ in backends[0].calls + backends[1].calls] == [100, 102, 101, 103]
    assert results[0][1].generated_tokens == sum(len(p) + 1 for p in prompts), "summed over processes, once each"


@pytest.fixture
def prompts(tokenizer):
    return [tokenizer(row["prompt"])["input_ids"] for row in sorting_rows(6, conversational=False)]


def sample(model, tokenizer, prompts, store=None, seed=3):
    return generate_responses(
        model, Accelerator(cpu=True), prompts, sampling=SamplingSettings(max_new_tokens=6), pad_token_id=PAD,
        eos_ids=[tokenizer.eos_token_id], batch_size=2, seed=seed, chunk_store=store,
    )  # fmt: skip


def test_a_pass_killed_midway_resumes_at_its_first_missing_chunk(tmp_path, tokenizer, model, prompts):
    folder = tmp_path / "chunks"
    full, stats = sample(model, tokenizer, prompts, ChunkStore(str(folder), "pass-1", len(tokenizer)))
    assert (stats.generate_calls, stats.reused_chunks) == (3, 0)
    assert sorted(p.name for p in folder.iterdir()) == [f"chunk_0000{i}.jsonl" for i in range(3)] + ["manifest.json"]

    (folder / "chunk_00002.jsonl").unlink()  # killed before its last chunk was written
    resumed, stats = sample(model, tokenizer, prompts, ChunkStore(str(folder), "pass-1", len(tokenizer)))
    assert (stats.generate_calls, stats.reused_chunks) == (1, 2)
    assert resumed == full, "the missing chunk is sampled again under its own seed"

    chunk = folder / "chunk_00000.jsonl"
    chunk.write_text(chunk.read_text().replace("]]", ", 5]]", 1))  # a changed chunk fails its checksum
    again, stats = sample(model, tokenizer, prompts, ChunkStore(str(folder), "pass-1", len(tokenizer)))
    assert (stats.generate_calls, stats.reused_chunks) == (1, 2) and again == full

    _, stats = sample(model, tokenizer, prompts, ChunkStore(str(folder), "another pass", len(tokenizer)))
    assert (stats.generate_calls, stats.reused_chunks) == (3, 0), "chunks of another pass are never used"


def test_a_pass_leaves_the_global_random_state_as_it_was(tokenizer, model, prompts):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first, _ = sample(model, tokenizer, prompts)
    assert torch.equal(torch.rand(3), expected)
    second, _ = sample(model, tokenizer, prompts)
    assert second == first, "the same seed samples the same responses"
    other, _ = sample(model, tokenizer, prompts, seed=4)
    assert other != first


@pytest.mark.parametrize("architecture", ["mixtral", "qwen2_moe"])
def test_generation_never_asks_a_mixture_of_experts_for_its_router_logits(tokenizer, architecture):
    # The usual way to train Mixtral with its load-balancing loss: `output_router_logits=True` in the config. A batch of
    # prompts of several lengths (left padding) then made `generate` compute that loss at every decoding step, and fail
    # with a size mismatch between the step's router logits and the whole attention mask.
    model = tiny_moe(tokenizer, architecture, output_router_logits=True)
    prompts = [tokenizer(row["prompt"])["input_ids"] for row in sorting_rows(3, conversational=False)]
    prompts[1] = prompts[1][:-3]
    responses, stats = generate_responses(
        model, Accelerator(cpu=True), prompts, sampling=SamplingSettings(max_new_tokens=4), pad_token_id=PAD,
        eos_ids=[tokenizer.eos_token_id], batch_size=3,
    )  # fmt: skip
    assert len(responses) == 3 and stats.generate_calls == 1
    assert model.config.output_router_logits, "the config is left as it was: training still gets the router loss"


def test_responses_are_paired_with_their_prompts_or_the_pass_stops(tokenizer, model, prompts):
    # settings TSPINConfig refuses, given to the pass directly: two sequences per prompt came back from `generate`, and
    # every prompt after the first was paired with another prompt's response
    two_each = SamplingSettings(max_new_tokens=4, generation_kwargs={"num_return_sequences": 2})
    with pytest.raises(RuntimeError, match="returned 8 sequences for 4 prompts: responses could not be paired"):
        generate_responses(
            model, Accelerator(cpu=True), prompts[:4], sampling=two_each, pad_token_id=PAD,
            eos_ids=[tokenizer.eos_token_id], batch_size=4,
        )  # fmt: skip
