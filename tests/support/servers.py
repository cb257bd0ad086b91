"""Local HTTP servers where a vLLM server is expected, for the vLLM server-mode tests (`tests/unit/test_vllm_backend.py`)
and the fault campaign's cases (`tests/faults/vllm_server.py`): another web server answering one status to everything
(`answering`), and a vLLM server as far as its health check and model list go that then fails or stays silent
(`healthy_then`). `serving(handler)` runs one on a free local port for the length of a `with` block."""

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET and POST with `status` and a web page that is not vLLM's."""

    status = 404

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not vLLM</html>")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


def answering(status: int) -> type[Answer]:
    """A web server (not vLLM) that answers HTTP `status` to every request."""
    return type(f"Answer{status}", (Answer,), {"status": status})


class HealthyThen(Answer):
    """A vLLM server as far as its health check and model list go; a POST to a path in `silent` is never answered
    (until `release` is set), one to a path in `failing` gets HTTP 500, any other gets `{}`."""

    silent: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()
    release = threading.Event()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/v1/models":
            self._answer(200, b'{"data": [{"id": "model"}]}')
        else:
            self._answer(200 if self.path == "/health" else 404, b"{}")

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path in self.silent:
            self.release.wait()
        elif self.path in self.failing:
            self._answer(500, b'{"error": "reload failed"}')
        else:
            self._answer(200, b"{}")


def healthy_then(silent: tuple[str, ...] = (), failing: tuple[str, ...] = ()) -> type[HealthyThen]:
    """A `HealthyThen` server silent on the POST paths `silent` and failing on `failing` (`"/collective_rpc"`: the
    weight sync, `"/v1/completions"`: the generation), with its own `release`."""
    return type("HealthyThen", (HealthyThen,), {"silent": silent, "failing": failing, "release": threading.Event()})


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free local port in a daemon thread; yields its base URL. On exit, a silent `HealthyThen`
    is released and the server stopped."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release = getattr(handler, "release", None)
        if release is not None:
            release.set()
        server.shutdown()
        server.server_close()
