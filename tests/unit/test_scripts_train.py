"""`tspin_trl/scripts/train.py`: `tspin-trl train`'s data loading (local files in any format, mixtures, evaluation
data), the shipped configs and the run's `results.md` links (its model presets: tests/unit/test_presets.py)."""

import gzip
import warnings
from pathlib import Path

import pytest
from datasets import Dataset, IterableDatasetDict

from tspin_trl import TSPINConfig
from tspin_trl.scripts.train import load_named_dataset, make_parser


ROOT = Path(__file__).resolve().parents[2]


def rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"prompt": f"sort: {i} 3 1\n", "completion": " ".join(sorted(f"{i}31"))} for i in range(offset, offset + n)
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz", ".parquet", ".csv"])
def test_a_local_file_in_any_format_loads_as_the_train_split(tmp_path, suffix):
    dataset = Dataset.from_list(rows(3))
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl.gz":
        dataset.to_json(tmp_path / "plain.jsonl")
        path.write_bytes(gzip.compress((tmp_path / "plain.jsonl").read_bytes()))
    elif suffix == ".json":
        dataset.to_json(path, lines=False)
    else:
        getattr(dataset, {".jsonl": "to_json", ".parquet": "to_parquet", ".csv": "to_csv"}[suffix])(path)
    (tmp_path / "other.csv").write_text("unrelated,columns\n1,2\n")  # a neighbour file must not be picked up
    loaded = load_named_dataset(str(path), split="train_sft")
    assert list(loaded) == ["train_sft"]
    assert loaded["train_sft"].to_list() == dataset.to_list()
    streamed = load_named_dataset(str(path), streaming=True)
    assert isinstance(streamed, IterableDatasetDict) and next(iter(streamed["train"])) == rows(1)[0]


def test_defaults_and_shipped_configs_raise_no_deprecation_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TSPINConfig(output_dir=str(tmp_path))
        for name in ("tiny", "demo", "paper_zephyr", "spin_scripts", "nemo_annealing"):
            args = ["--config", str(ROOT / "examples" / "configs" / f"{name}.yaml"), "--bf16", "false"]
            make_parser().parse_args_and_config(args=args)
    messages = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert messages == []
    assert config.activation_checkpointing is True and config.gradient_checkpointing is True  # TRL's default
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # the old name, set by the user, still warns
        assert TSPINConfig(output_dir=str(tmp_path), gradient_checkpointing=False).activation_checkpointing is False


def test_the_paper_config_says_what_the_paper_says_and_starts_until_it_needs_the_hub(tmp_path, monkeypatch):
    from tspin_trl.scripts.train import main, make_parser

    config = ROOT / "examples" / "configs" / "paper_zephyr.yaml"
    script, args, model, _, self_play = make_parser().parse_args_and_config(
        args=["--config", str(config), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]  # no GPU here
    )
    assert (model.model_name_or_path, model.model_revision) == (
        "alignment-handbook/zephyr-7b-sft-full",
        "ac6e600eefcce74f5e8bae1035d4f66019e93190",
    )
    assert (script.dataset_name, script.dataset_train_split) == ("HuggingFaceH4/ultrachat_200k", "train_sft")
    assert (self_play.first_turn_only, self_play.num_train_samples) == (True, 50000)
    assert (args.objective, args.alpha, args.beta, args.beta_first_iteration, args.loss_type) == (
        "tspin",
        1.0,
        0.1,
        0.0,
        "sigmoid",
    )
    assert (args.num_iterations, args.restart_each_iteration, args.mix_previous_iteration) == (5, True, False)
    assert (args.optim.value, args.weight_decay, args.learning_rate, args.warmup_steps) == ("rmsprop", 0.0, 5e-7, 0.1)
    assert (args.lr_scheduler_type.value, args.per_device_train_batch_size * 8, args.max_length) == (
        "linear",
        64,
        2048,
    )
    assert (args.max_completion_length, args.temperature, args.top_p, args.top_k) == (256, 1.0, 1.0, 0)
    # it starts, and stops only where it needs the Hub (no network here)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="(?i)offline|hub|connect|couldn't find"):
        main(script, args, model, _, self_play)
    assert not (tmp_path / "out" / "self_play").exists(), "nothing was trained or generated"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_eval_data_from_its_own_file_folder_or_list(tmp_path, suffix):
    from trl import DatasetMixtureConfig, ScriptArguments

    from tspin_trl.scripts.train import SelfPlayScriptArguments, load_data

    Dataset.from_list(rows(6)).to_json(tmp_path / "train.jsonl")
    evaluation = Dataset.from_list(rows(3, offset=6))
    getattr(evaluation, {".jsonl": "to_json", ".csv": "to_csv", ".parquet": "to_parquet"}[suffix])(
        tmp_path / f"dev{suffix}"
    )
    (tmp_path / "folder").mkdir()
    evaluation.to_json(tmp_path / "folder" / "validation.jsonl")
    script = ScriptArguments(dataset_name=str(tmp_path / "train.jsonl"))
    given = {
        "file": SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / f"dev{suffix}")),
        "folder": SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / "folder")),  # its only split
        "list": SelfPlayScriptArguments(eval_datasets=[{"path": "json", "data_files": str(tmp_path / "dev.jsonl")}]),
    }
    evaluation.to_json(tmp_path / "dev.jsonl")
    for name, self_play in given.items():
        for strategy in ("steps", "no"):  # also without evaluation steps: the likelihood inversion is measured on it
            data = load_data(script, DatasetMixtureConfig(), self_play, eval_strategy=strategy)
            assert data["eval"].to_list() == evaluation.to_list(), (name, strategy)
            assert data["train"].to_list() == rows(6)
    folder = SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / "folder"), eval_dataset_split="validation")
    assert len(load_data(script, DatasetMixtureConfig(), folder)["eval"]) == 3
    assert load_data(script, DatasetMixtureConfig(), SelfPlayScriptArguments())["eval"] is None


def test_missing_eval_split_error_fits_what_was_given():
    from trl import DatasetMixtureConfig, ScriptArguments

    from tspin_trl.scripts.train import _missing_eval_split

    hub = _missing_eval_split(
        "steps", "test", ["train"], ScriptArguments(dataset_name="org/data"), DatasetMixtureConfig()
    )
    assert "the dataset 'org/data' has the splits ['train'], none named 'test'. Set --dataset_test_split" in hub
    mixture = DatasetMixtureConfig(datasets=[{"path": "json", "data_files": "a.jsonl"}])
    assert "`eval_datasets:`" in _missing_eval_split("steps", "test", ["train"], ScriptArguments(), mixture)
