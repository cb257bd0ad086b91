"""Builders the tests share: small sorting rows and a fast CPU configuration of the tiny preset."""

from tspin_trl import TSPINConfig


def sorting_rows(n: int = 8, conversational: bool = True) -> list[dict]:
    """`n` deterministic digit-sorting rows (`prompt`/`completion`), as messages or as plain text."""
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
