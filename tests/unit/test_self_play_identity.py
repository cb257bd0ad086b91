"""`tspin_trl/self_play/identity.py`: the run's identity and the binding of `self_play/` to it."""

import json

import pytest

from tspin_trl.run_folder import RunFolder
from tspin_trl.self_play import RunBinding, SelfPlayError


def test_the_run_binding_refuses_another_runs_folder(tmp_path):
    folder = RunFolder(str(tmp_path))
    binding = RunBinding(folder)
    identity = {"data": {"train": "d1"}, "temperature": 1.0}
    binding.bind(identity, "digest-1", global_step=0)
    assert json.loads(open(folder.identity_path).read())["digest"] == "digest-1"
    for iteration in (0, 1):
        (tmp_path / "self_play" / f"iteration_{iteration}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "self_play" / f"iteration_{iteration}" / "train.jsonl").write_text("{}\n")
    folder.append_log({"step": 1})
    binding.bind(identity, "digest-1", global_step=0)  # a fresh start of the same run
    assert folder.iteration_numbers() == [0], "what the trained policy produced is dropped, iteration 0 kept"
    assert not (tmp_path / "self_play" / "logs.jsonl").exists()
    other = {"data": {"train": "d2"}, "temperature": 0.5}
    with pytest.raises(SelfPlayError, match=r"another run \(it differs in: data \(different content\), temperature"):
        binding.bind(other, "digest-2", global_step=0)
    with pytest.raises(SelfPlayError, match=r"Cannot resume.*temperature \(1\.0 -> 0\.5\)"):
        binding.bind(other, "digest-2", global_step=3)
