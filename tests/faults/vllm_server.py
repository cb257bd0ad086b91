"""Cases: vLLM generation that cannot work: a server URL where no vLLM server runs (another web server, a port that
accepts and stays silent, one that answers a byte at a time, nothing at all), and colocate mode on a model whose head
size vLLM's CPU build cannot run. Each must fail before training, within `vllm_server_timeout`, naming the fix."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.servers import answering, healthy_then, serving

from .harness import DEFECT, Verdict, case, classify_error, make_trainer


VLLM = "vLLM server and colocate"
SERVER_TIMEOUT = 3  # vllm_server_timeout of the server cases, seconds


@contextmanager
def _raw_server(serve: Callable[[socket.socket, threading.Event], None] | None) -> Iterator[str]:
    """A TCP port that listens; `serve(connection, stop)` handles each accepted connection (`None`: never accept)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=serve, args=(connection, stop), daemon=True).start()

    if serve is not None:
        threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def _silent(connection: socket.socket, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        pass
    connection.close()


def _trickle(connection: socket.socket, stop: threading.Event) -> None:
    """Answers one byte of a never-ending header every second (each read finishes well within any timeout)."""
    try:
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(1.0):
            connection.sendall(b"X")
    except OSError:
        pass
    finally:
        connection.close()


def _server_run(ctx, url: str, *keywords: str) -> Verdict:
    start = time.monotonic()
    try:
        make_trainer(
            ctx.out, use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_server_timeout=SERVER_TIMEOUT
        ).train()
    except Exception as error:  # noqa: BLE001
        took = time.monotonic() - start
        verdict = classify_error(error, keywords)
        verdict.detail = f"failed after {took:.1f} s (vllm_server_timeout={SERVER_TIMEOUT})"
        if took > SERVER_TIMEOUT + 8:  # building the trainer takes a second or two
            return Verdict(DEFECT, f"failed only after {took:.0f} s: {verdict.message}"[:400])
        return verdict
    return Verdict(DEFECT, f"trained with vllm_server_base_url={url} where no vLLM server runs")


@case(VLLM, "vllm_mode='server' at a URL where another web server answers HTTP 404", quick=True, finding="20")
def vllm_server_404(ctx):
    with serving(answering(404)) as url:
        return _server_run(ctx, url, url, "404", "vllm_server_base_url")


@case(VLLM, "vllm_mode='server' at a URL where a server answers HTTP 500 to everything", finding="20")
def vllm_server_500(ctx):
    with serving(answering(500)) as url:
        return _server_run(ctx, url, url, "HTTP 500", "vllm_server_timeout")


@case(
    VLLM,
    "vllm_mode='server' at a URL where a web server answers 200 to every request (not vLLM, but /health says OK)",
    finding="20",
    timeout=60,
)
def vllm_server_200_everywhere(ctx):
    with serving(answering(200)) as url:
        return _server_run(ctx, url, url)


@case(VLLM, "vllm_mode='server' at a port that accepts connections and never answers", finding="20", timeout=40)
def vllm_server_silent_port(ctx):
    with _raw_server(_silent) as url:
        return _server_run(ctx, url, url, "vllm_server_timeout")


@case(VLLM, "vllm_mode='server' at a port that listens but never accepts (a full backlog)", finding="20", timeout=40)
def vllm_server_never_accepts(ctx):
    with _raw_server(None) as url:
        return _server_run(ctx, url, url, "vllm_server_timeout")


@case(
    VLLM,
    "vllm_mode='server' at a port that answers one byte of a header every second (each read within the timeout)",
    quick=True,
    finding="20",
    timeout=15,
)
def vllm_server_trickle(ctx):
    with _raw_server(_trickle) as url:
        return _server_run(ctx, url, url, "vllm_server_timeout")


@case(VLLM, "vllm_mode='server' at a free port (nothing listens)", finding="20", timeout=40)
def vllm_server_nothing_listens(ctx):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    return _server_run(ctx, url, url, "vllm_server_timeout")


@case(VLLM, "vllm_server_base_url='localhost:8000' (no scheme)", timeout=40)
def vllm_server_url_without_scheme(ctx):
    return _server_run(ctx, "localhost:8000", "localhost:8000")


@case(
    VLLM,
    "use_vllm=True (colocate) on the tiny preset, whose head size (16) vLLM's CPU build cannot run",
    finding="20",
    timeout=120,
)
def vllm_colocate_head_size(ctx):
    try:
        make_trainer(ctx.out, use_vllm=True).train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("head size", "use_vllm=False"))
    return Verdict(DEFECT, "trained with vLLM on a head size its CPU build cannot run?")


@case(VLLM, "trainer.args.use_vllm=True set after construction (colocate, tiny preset)", finding="20", timeout=120)
def vllm_colocate_set_after_construction(ctx):
    trainer = make_trainer(ctx.out)
    trainer.args.use_vllm = True
    try:
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("head size", "use_vllm=False"))
    if not trainer.self_play.generation_stats:
        return Verdict(DEFECT, "nothing generated")
    return Verdict(DEFECT, "use_vllm=True set after construction was ignored: generated with model.generate")


# ---- issue 32: a deadline on every request, not only the start-up check ----------------------------------------------


def _import_vllm() -> None:
    from tspin_trl.vllm_backend import _vllm_generation_class

    _vllm_generation_class()


@case(
    VLLM,
    "vllm_mode='server' at a server that answers /health and /v1/models, then never answers the weight sync",
    quick=True,
    finding="32",
    timeout=60,
)
def vllm_server_silent_after_health(ctx):
    _import_vllm()  # what the time limit measures is the request, not vLLM's first import (about 9 s)
    with serving(healthy_then(silent=("/collective_rpc",))) as url:
        return _server_run(ctx, url, f"{url}/collective_rpc", "vllm_server_timeout")


@case(
    VLLM,
    "vllm_mode='server' at a server that answers /health and /v1/models, then HTTP 500 to the weight sync",
    finding="32",
    timeout=60,
)
def vllm_server_500_on_weight_sync(ctx):
    _import_vllm()
    with serving(healthy_then(failing=("/collective_rpc",))) as url:
        return _server_run(ctx, url, f"{url}/collective_rpc", "HTTP 500")
