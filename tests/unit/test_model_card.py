"""`tspin_trl/model_card.py`: what the model card adds to TRL's (the paper, the T-SPIN settings, the per-iteration
table, the base model's license) and the links it may give."""

import json
import os
from pathlib import Path

from datasets import Dataset

from tests.support import make_config
from tspin_trl import TSPINTrainer


def test_model_card_cites_the_paper(tmp_path, model, tokenizer, sorting_dataset):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    trainer.create_model_card(model_name="tiny")
    card = open(os.path.join(tmp_path, "README.md")).read()
    assert "2601.08198" in card and "Triplets Better Than Pairs" in card and "@inproceedings{wang2025triplets" in card


def rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"prompt": f"sort: {i} 3 1\n", "completion": " ".join(sorted(f"{i}31"))} for i in range(offset, offset + n)
    ]


def test_model_card_links_only_what_is_on_the_hub(tmp_path, model, tokenizer, sorting_dataset):
    from tests.support import make_config
    from tspin_trl import TSPINTrainer

    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    local = tmp_path / "pc.jsonl"
    local.write_text("")
    card = tmp_path / "README.md"
    trainer.create_model_card(model_name="tiny", dataset_name="trl-lib/Capybara")
    text = card.read_text()
    assert (
        "fine-tuned version of a local model on the [trl-lib/Capybara](https://huggingface.co/datasets/trl-lib/Capybara)"
        in text
    )
    assert "datasets: trl-lib/Capybara\n" in text and "huggingface.co/None" not in text  # metadata keeps a Hub dataset
    trainer.create_model_card(model_name="tiny", dataset_name=str(local))
    text = card.read_text()
    assert "a local model on `pc.jsonl` (local).\n" in text and "huggingface.co/datasets" not in text
    assert str(local) not in text  # neither in the text nor in the metadata
    trainer.create_model_card(model_name="tiny", dataset_name=["trl-lib/Capybara", str(local)])
    assert (
        "on [trl-lib/Capybara](https://huggingface.co/datasets/trl-lib/Capybara), `pc.jsonl` (local).\n"
        in card.read_text()
    )


def test_model_card_states_the_tspin_settings_the_iterations_and_an_honest_license(tmp_path, tokenizer):
    from tests.support import make_config
    from tspin_trl import TSPINTrainer
    from tspin_trl.demo import save_tiny_preset

    base = Path(save_tiny_preset(tmp_path / "base"))
    output = tmp_path / "out"
    args = make_config(output, num_iterations=3, beta=0.2, alpha=0.5, learning_rate=2e-4, optim="adamw_torch")
    trainer = TSPINTrainer(model=str(base), args=args, train_dataset=Dataset.from_list(rows(6)))
    trainer.create_model_card(model_name="out")
    card = (output / "README.md").read_text()
    assert "licence" not in card and "\nlicense:" not in card.split("---")[1]  # unknown: no metadata line
    assert "Not recorded: the card of the base model `base` states none" in card
    for row in (
        "| objective | `tspin`, loss `sigmoid` |",
        "| alpha (reward scale) | 0.5 |",
        "| beta (historical term) | 0.2 (0 in iteration 0) |",
        "| self-play iterations | 3 |",
        "| epochs per iteration | 1 |",
        "| learning rate | 0.0002, `linear`, warm-up 0, restarted every iteration |",
        "| optimizer | `adamw_torch`, weight decay 0 |",
        "| training prompts | 6 |",
    ):
        assert row in card, row
    assert "### Per-iteration results" not in card and "## What self-play did" not in card  # nothing trained yet

    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# the base model\n")
    folder = output / "self_play"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"iteration": 0, "first_step": 1, "last_step": 2, "complete": True, "means": {"loss/per_example": 0.69}}
    (folder / "iterations.jsonl").write_text(json.dumps(record) + "\n")
    trainer.create_model_card(model_name="out")
    card = (output / "README.md").read_text()
    assert "\nlicense: apache-2.0\n" in card.split("---")[1] and "licence" not in card
    assert "`apache-2.0`, from the card of the base model `base`" in card
    assert "### Per-iteration results" in card and "| 0 | 1-2 | 0.69 |" in card
    assert card.index("### T-SPIN settings") < card.index("### Framework versions")
    # the verdict opens the card, right after TRL's opening paragraph
    opening = card.split("## What self-play did\n\n")[1].split("\n\n")[0]
    assert card.index("## What self-play did") < card.index("## Quick start")
    assert opening.startswith("There is no held-out evidence: the run had no evaluation set.")
