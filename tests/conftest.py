import os

import pytest
from datasets import Dataset


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tspin_trl import TSPINConfig  # noqa: E402
from tspin_trl.presets import build_char_tokenizer, build_tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_proto_cache(tmp_path, monkeypatch):
    """Every test gets its own proto cache, so no test sees another's entries."""
    monkeypatch.setenv("TSPIN_TRL_CACHE", str(tmp_path / "proto_cache"))


@pytest.fixture
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def model(tokenizer):
    return build_tiny_model(tokenizer)


def sorting_rows(n: int = 8, conversational: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        digits = [(i * 7 + k * 3) % 10 for k in range(4)]
        prompt = "sort: " + " ".join(map(str, digits))
        answer = " ".join(map(str, sorted(digits)))
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                }
            )
        else:
            rows.append({"prompt": prompt + "\n", "completion": answer})
    return rows


@pytest.fixture
def sorting_dataset():
    return Dataset.from_list(sorting_rows())


def make_config(output_dir, **overrides) -> TSPINConfig:
    """A fast CPU configuration for the tiny preset."""
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        num_iterations=1,
        max_completion_length=10,
        max_length=64,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        report_to=[],
        gradient_checkpointing=False,
        save_strategy="no",
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    kwargs.update(overrides)
    return TSPINConfig(**kwargs)
