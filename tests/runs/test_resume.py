"""A run is what it says (issue: the last silent results, resumes refused with a false reason, the hang): the data's
own responses and every optimizer setting in the identity, a fresh start that leaves nothing a resume could take for
its own, the notebook's Ctrl-C then resume on the same trainer, settings checked when training starts, a vLLM server
that is not one, I/O errors that name the file."""

import errno
import http.server
import json
import os
import socket
import stat
import threading
import time

import pytest
import torch
from accelerate import Accelerator
from transformers import TrainerCallback

from tests.support import StopAfter, make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINConfig
from tspin_trl.cache import ProtoCache
from tspin_trl.checked_io import atomic_write
from tspin_trl.demo import build_tiny_model
from tspin_trl.locks import OutputDirLockedError, RunLock
from tspin_trl.self_play import SelfPlayError
from tspin_trl.vllm_backend import make_generation_backend


def parameters(trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])


def with_own_responses(synthetic: str) -> list[dict]:
    return [r | {"synthetic": [{"role": "assistant", "content": synthetic}]} for r in sorting_rows(8)]


# ---- what decides a run is in its identity, by content --------------------------------------------------------------


def test_a_changed_own_response_column_is_another_run(tmp_path, tokenizer):
    self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("1 2"), num_iterations=1).train()
    with pytest.raises(SelfPlayError, match=r"another run \(it differs in: data \(different content\)\)"):
        self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("3 4"), num_iterations=1).train()


def test_a_resume_with_a_changed_own_column_or_optimizer_setting_is_refused(tmp_path, tokenizer):
    first = self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("1 2"), save_strategy="steps", save_steps=1)
    first.add_callback(StopAfter(2))
    first.train()
    for rows, config, field in (
        (with_own_responses("3 4"), {}, "data"),
        (with_own_responses("1 2"), {"optim_args": "momentum=0.5"}, "optim_args"),
        (with_own_responses("1 2"), {"adam_beta2": 0.9}, "adam_beta2"),
    ):
        resumed = self_play_trainer(tmp_path, tokenizer, rows=rows, save_strategy="steps", save_steps=1, **config)
        with pytest.raises(SelfPlayError, match=f"Cannot resume.*Changed: .*{field}"):
            resumed.train(resume_from_checkpoint=True)


# ---- a fresh start leaves nothing a later resume could take -----------------------------------------------------------


def test_a_stopped_fresh_rerun_resumes_to_an_uninterrupted_runs_weights(tmp_path, tokenizer, caplog):
    checkpointed = {"save_strategy": "steps", "save_steps": 1}
    finished = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    finished.train()
    reference = parameters(finished)

    rerun = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    rerun.add_callback(StopAfter(3))
    with caplog.at_level("WARNING"):
        rerun.train()
    assert "were moved to" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    replaced = list((tmp_path / "self_play" / "replaced").iterdir())
    assert len(replaced) == 1
    record = json.loads((replaced[0] / "replaced.json").read_text())
    assert "checkpoint-8" in record["moved"] and "self_play/iteration_1" in record["moved"]
    assert (replaced[0] / "checkpoint-8" / "trainer_state.json").is_file(), "nothing is destroyed"

    resumed = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    torch.testing.assert_close(parameters(resumed), reference, rtol=0, atol=0)


# ---- the notebook: Ctrl-C, then train(resume_from_checkpoint=True) on the same object ---------------------------------


class CtrlC(TrainerCallback):
    def __init__(self, step: int):
        self.step, self.fired = step, False

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_at", [3, 6], ids=["iteration_0", "iteration_1"])
def test_ctrl_c_then_resume_on_the_same_trainer(tmp_path, tokenizer, stop_at):
    checkpointed = {"save_strategy": "steps", "save_steps": 1, "num_iterations": 2}
    uninterrupted = self_play_trainer(tmp_path / "reference", tokenizer, **checkpointed)
    uninterrupted.train()

    trainer = self_play_trainer(tmp_path / "run", tokenizer, **checkpointed)
    trainer.add_callback(CtrlC(stop_at))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 8
    torch.testing.assert_close(parameters(trainer), parameters(uninterrupted), rtol=0, atol=0)
    assert set(trainer.monitor.summaries) == {0, 1}, "both iterations summarised (the earlier one in the first call)"


# ---- settings are checked when training starts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", "0.7", "TSPINConfig.temperature='0.7' is invalid: it must be a number, got str"),
        ("learning_rate", "1e-4", "TSPINConfig.learning_rate='1e-4' is invalid: it must be a number"),
        ("alpha", None, "TSPINConfig.alpha=None is invalid: it must be a number, got NoneType"),
        ("beta", "0.1", "TSPINConfig.beta='0.1' is invalid"),
        ("top_p", None, "TSPINConfig.top_p=None is invalid"),
        ("max_grad_norm", -1.0, "TSPINConfig.max_grad_norm=-1.0 is invalid: it must be >= 0"),
    ],
)
def test_float_fields_are_typed_like_integer_ones(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


def test_settings_changed_after_construction_are_checked_when_training_starts(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path / "fewer", tokenizer, num_iterations=3)
    trainer.args.num_iterations = 2  # takes effect: two iterations of 4 steps, as a new trainer would run
    trainer.train()
    assert trainer.state.global_step == 8 and trainer.args.num_train_epochs == 2
    assert sorted(trainer.self_play.generation_stats) == ["iteration_1/train", "proto/train"]

    trainer = self_play_trainer(tmp_path / "alpha", tokenizer)
    trainer.args.alpha = -1.0
    with pytest.raises(ValueError, match=r"TSPINConfig.alpha=-1.0 is invalid: it must be > 0"):
        trainer.train()

    trainer = self_play_trainer(tmp_path / "length", tokenizer)
    trainer.args.max_length = 32
    with pytest.raises(
        ValueError, match=r"changed after the trainer was built: max_length \(64 -> 32\).*new TSPINTrainer"
    ):
        trainer.train()


# ---- vLLM: a server that is not one, a model the CPU build cannot run ----------------------------------------------------


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


class OkEverywhere(NotFound):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")


class Trickle(NotFound):
    """Answers `/health` one byte a second: a `requests` timeout (per read) never fires."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(1)


def serve(handler) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(
    "handler, message",
    [
        (OkEverywhere, r"answers its health check but not as a vLLM server does: .*/v1/models gave HTTP 200"),
        (Trickle, r"No vLLM server answered at .* within vllm_server_timeout=3 s \(last answer: no complete answer"),
    ],
    ids=["200_everywhere", "trickle"],
)
def test_a_server_that_is_not_vllm_fails_within_the_timeout(tmp_path, tokenizer, handler, message):
    server, url = serve(handler)
    args = make_config(tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=3)
    start = time.monotonic()
    try:
        with pytest.raises(ConnectionError, match=message):
            make_generation_backend(args, build_tiny_model(tokenizer), Accelerator(cpu=True), tokenizer)
    finally:
        server.shutdown()
    assert time.monotonic() - start < 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_answering_404_fails_within_the_server_timeout(tmp_path, tokenizer):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    args = make_config(tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=5)
    model = build_tiny_model(tokenizer)
    start = time.monotonic()
    try:
        with pytest.raises(ConnectionError, match=f"{url} answered HTTP 404.*not a vLLM server.*vllm_server_base_url"):
            make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)
    finally:
        server.shutdown()
    assert time.monotonic() - start < 5

    silent = f"http://127.0.0.1:{_free_port()}"  # nothing listens: refused until the deadline
    args = make_config(tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=silent, vllm_server_timeout=2)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"No vLLM server answered at {silent} within vllm_server_timeout=2 s"):
        make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)
    assert 1.5 < time.monotonic() - start < 6


def test_colocate_refuses_a_head_size_the_cpu_build_cannot_run(tmp_path, tokenizer):
    model = build_tiny_model(tokenizer)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim == 16, "the tiny preset's head size, which vLLM's CPU attention does not support"
    args = make_config(tmp_path, use_vllm=True)
    with pytest.raises(ValueError, match=r"supports head sizes \[32, 64.*this model's is 16.*use_vllm=False"):
        make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)


# ---- files: their paths in errors, no stray temporaries, readable by others ----------------------------------------------


def test_a_full_disk_error_names_the_file(tmp_path, monkeypatch):
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    target = str(tmp_path / "self_play" / "iteration_1" / "train.jsonl")
    with pytest.raises(OSError, match=f"No space left on device.*{target}") as raised:
        atomic_write(target, "x" * 100_000)
    assert raised.value.errno == errno.ENOSPC
    assert not list((tmp_path / "self_play" / "iteration_1").glob("*.tmp"))


def test_temporaries_of_a_killed_writer_are_removed_and_files_follow_the_umask(tmp_path, tokenizer):
    stray = tmp_path / "self_play" / "iteration_0" / "train.jsonl.k1ll3d.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_text("half")
    cache = tmp_path / "cache"
    cache_stray = cache / "0123456789abcdef0123456789abcdef.jsonl.x1y2.tmp"
    cache.mkdir()
    cache_stray.write_text("half")
    old = os.umask(0o022)
    try:
        trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1, proto_cache_dir=str(cache))
        trainer.train()
    finally:
        os.umask(old)
    assert not stray.exists()
    for path in [*tmp_path.glob("self_play/**/*.json*"), *cache.glob("*.json*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    entry = next(cache.glob("*.jsonl"))
    ProtoCache(str(cache))._remove_temporaries("0123456789abcdef0123456789abcdef")
    assert not cache_stray.exists() and entry.exists()


def test_a_shared_cache_lock_says_what_is_shared(tmp_path):
    sleeper_lock = tmp_path / "entry.lock"
    sleeper_lock.write_text(
        json.dumps({"pid": os.getppid(), "pid_start": None, "host": socket.gethostname(), "started": time.time()})
    )
    lock = RunLock(str(sleeper_lock), guards="generating the proto cache entry k", conflict="Runs that share a cache.")
    with pytest.raises(OutputDirLockedError) as raised:
        lock.acquire()
    assert "Runs that share a cache" in str(raised.value) and "output_dir" not in str(raised.value)


# ---- found by the fault campaign ---------------------------------------------------------------------------------------


def test_proto_responses_a_later_iteration_needs_are_sampled_at_the_start(tmp_path, tokenizer):
    """Without reusing them as iteration 0's synthetic responses, iteration 0 does not use the proto responses, but
    iteration 1 does: they must come from the initial policy, so they are sampled before training."""
    trainer = self_play_trainer(tmp_path, tokenizer, reuse_proto_as_first_synthetic=False, num_iterations=2)
    trainer.train()
    assert sorted(trainer.self_play.generation_stats) == ["iteration_0/train", "iteration_1/train", "proto/train"]
    assert trainer.state.global_step == 8


@pytest.mark.parametrize(
    "field, value",
    [("seed", 7), ("per_device_train_batch_size", 4), ("output_dir", "elsewhere"), ("report_to", ["tensorboard"])],
)
def test_what_transformers_fixes_at_construction_cannot_change_afterwards(tmp_path, tokenizer, field, value):
    trainer = self_play_trainer(tmp_path, tokenizer)
    setattr(trainer.args, field, value)
    with pytest.raises(ValueError, match=f"changed after the trainer was built: {field} "):
        trainer.train()


def test_a_replaced_args_object_and_a_second_fresh_train_are_refused(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1)
    trainer.args = make_config(tmp_path, num_iterations=1, per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="`trainer.args` was replaced by another TSPINConfig"):
        trainer.train()
    trainer = self_play_trainer(tmp_path / "twice", tokenizer, num_iterations=1, save_strategy="steps", save_steps=2)
    trainer.train()
    with pytest.raises(
        ValueError, match=r"already been trained \(4 steps.*resume_from_checkpoint=True.*model=trainer"
    ):
        trainer.train()
    trainer.train(resume_from_checkpoint=True)  # resuming the finished run is allowed (it has nothing left to do)


def test_numpy_numbers_are_numbers(tmp_path):
    import numpy as np

    config = TSPINConfig(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, alpha=np.float32(0.5), num_iterations=np.int64(2)
    )
    assert (config.alpha, config.num_iterations) == (0.5, 2)
    assert type(config.alpha) is float and type(config.num_iterations) is int


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"messages"}, r"several formats \('messages' and 'prompt' \+ 'completion'\)"),
        ({"chosen"}, r"several formats \('prompt' \+ 'completion' and 'prompt' \+ 'chosen'\)"),
    ],
)
def test_a_dataset_with_two_formats_is_refused(tmp_path, tokenizer, columns, message):
    from tspin_trl.data import DataFormatError

    rows = sorting_rows(8)
    extra = {"messages": rows[0]["prompt"] + rows[0]["completion"], "chosen": rows[0]["completion"]}
    rows = [row | {column: extra[column] for column in columns} for row in rows]
    with pytest.raises(DataFormatError, match=message):
        self_play_trainer(tmp_path, tokenizer, rows=rows)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([{"role": "user", "content": "  "}], "user message 0 of the prompt is empty"),
        ([{"role": "assistant", "content": "sort: 3 1"}], r"the prompt has no user message \(roles \['assistant'\]\)"),
    ],
)
def test_a_prompt_that_asks_nothing_is_refused(tmp_path, tokenizer, prompt, message):
    from tspin_trl.data import DataFormatError

    rows = [row | {"prompt": prompt} for row in sorting_rows(8)]
    with pytest.raises(DataFormatError, match=message):
        self_play_trainer(tmp_path, tokenizer, rows=rows)


def test_checkpoint_files_follow_the_umask(tmp_path, tokenizer):
    old = os.umask(0o022)
    try:
        trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1, save_strategy="steps", save_steps=4)
        trainer.train()
        trainer.save_model()
    finally:
        os.umask(old)
    weights = [tmp_path / "checkpoint-4" / "model.safetensors", tmp_path / "model.safetensors"]
    for path in weights:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
