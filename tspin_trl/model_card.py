"""What a T-SPIN model card adds to TRL's: the run's T-SPIN settings, its per-iteration table and an honest license.

TRL's template writes the metadata line `licence: license`, a placeholder under a misspelt key. The license of a
fine-tuned model is not ours to choose: it follows the base model's (and the training data's terms). So the card
carries `license:` only when the base model's own card states one (a local folder's `README.md`, or the Hub card of
a Hub model, from the cache when offline), and says where it comes from; otherwise the metadata has no license and
the text says it was not recorded.
"""

import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard


def base_model_license(name_or_path: str | None, revision: str | None = None) -> str | None:
    """
    The `license` of the base model's card, or `None` when it has none or cannot be read.

    Args:
        name_or_path (`str` or `None`):
            A local model folder (its `README.md` is read) or a Hub id (its card is fetched; only from the cache
            when `HF_HUB_OFFLINE` is set).
        revision (`str`, *optional*):
            The Hub revision of the base model.
    """
    if not name_or_path:
        return None
    try:
        if os.path.isdir(name_or_path):
            readme = Path(name_or_path, "README.md")
            card = ModelCard.load(readme) if readme.is_file() else None
        else:
            card = ModelCard.load(name_or_path, revision=revision)
    except Exception:  # no card, no network, a malformed card: the license is unknown, which the card then says
        return None
    license_ = card.data.get("license") if card is not None else None
    if isinstance(license_, list):
        license_ = ", ".join(str(item) for item in license_)
    return str(license_) if license_ else None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table(args: Any, num_prompts: int | None, num_processes: int) -> str:
    """
    A markdown table of the T-SPIN settings of a run: the objective and its coefficients, iterations, learning rate
    and schedule, optimizer, batch size, data size, lengths and sampling.

    Args:
        args ([`TSPINConfig`]):
            The run's configuration.
        num_prompts (`int` or `None`):
            Prompts of the training dataset, when known.
        num_processes (`int`):
            Number of training processes (for the global batch size).
    """
    per_device, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    restart = "restarted every iteration" if args.restart_each_iteration else "one schedule over all iterations"
    rows = [
        ("objective", f"`{args.objective}`, loss `{args.loss_type}`"),
        ("alpha (reward scale)", _number(args.alpha)),
        ("beta (historical term)", f"{_number(args.beta)} ({_number(args.beta_first_iteration)} in iteration 0)"),
        ("self-play iterations", str(args.num_iterations)),
        ("epochs per iteration", str(args.epochs_per_iteration)),
        (
            "learning rate",
            f"{_number(args.learning_rate)}, `{schedule}`, warm-up {_number(args.warmup_steps)}, {restart}",
        ),
        ("optimizer", f"`{getattr(args.optim, 'value', args.optim)}`, weight decay {_number(args.weight_decay)}"),
        (
            "batch size",
            f"{per_device * accumulation * num_processes} ({per_device} per device x {accumulation} accumulation "
            f"x {num_processes} processes)",
        ),
        ("training prompts", "unknown" if num_prompts is None else str(num_prompts)),
        ("max length (prompt + response)", str(args.max_length)),
        ("max generated tokens", str(args.max_completion_length)),
        ("sampling", f"temperature {_number(args.temperature)}, top_p {_number(args.top_p)}, top_k {args.top_k}"),
        ("generation", "vLLM" if args.use_vllm else "`model.generate`"),
    ]
    if args.mix_previous_iteration:
        rows.append(("data mixing", "SPIN's: each iteration also trains on the previous iteration's responses"))
    return "\n".join(["| setting | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]) + "\n"


def add_tspin_sections(
    card_path: str | os.PathLike,
    settings: str,
    iterations: str | None,
    license_: str | None,
    base_model: str | None,
    verdict: str | None = None,
) -> None:
    """
    Rewrite the card at `card_path` (written by TRL's template): the run's verdict right after the card's opening
    paragraph, the settings table and the per-iteration table before "Framework versions", a license section, and the
    metadata's `license` (set when known, TRL's `licence` placeholder removed).

    Args:
        card_path (`str` or `os.PathLike`):
            The card (`output_dir/README.md`).
        settings (`str`):
            The table of [`settings_table`].
        iterations (`str` or `None`):
            The per-iteration table (`tspin_trl.plot.iteration_table`), or `None` before the first iteration ends.
        license_ (`str` or `None`):
            The base model's license ([`base_model_license`]), or `None` when unknown.
        base_model (`str` or `None`):
            The base model's name, for the license section.
        verdict (`str`, *optional*):
            A few sentences on what self-play did (`tspin_trl.report.verdict`), shown first.
    """
    card = ModelCard.load(card_path)
    data = card.data.to_dict()
    data.pop("licence", None)
    data.pop("license", None)
    if license_:
        data["license"] = license_
    card.data = type(card.data)(**data)
    base = f"`{base_model}`" if base_model else "the base model"
    if license_:
        license_text = (
            f"`{license_}`, from the card of the base model {base}. The terms of the training data may also apply."
        )
    else:
        license_text = (
            f"Not recorded: the card of the base model {base} states none that could be read. This model is derived "
            "from the base model and its training data: their licenses decide how it may be used."
        )
    sections = ["### T-SPIN settings", "", settings]
    if iterations:
        sections += [
            "### Per-iteration results",
            "",
            "The held-out evidence (`heldout ...`, `likelihood_inversion`) is measured on the evaluation data before "
            "training (`start`) and after each iteration, the score on greedy responses to held-out prompts; the "
            "other columns are means over every training step of the iteration (`self_play/iterations.jsonl`).",
            "",
            iterations,
        ]
    sections += ["### License", "", license_text, "", ""]
    marker = "### Framework versions"
    text = card.text
    text = text.replace(marker, "\n".join(sections) + marker, 1) if marker in text else text + "\n".join(sections)
    if verdict:
        opening = f"## What self-play did\n\n{verdict}\n\n"
        anchor = next((a for a in ("## Quick start", "## Training procedure") if a in text), None)
        text = text.replace(anchor, opening + anchor, 1) if anchor else opening + text
    card.text = text
    card.save(card_path)
