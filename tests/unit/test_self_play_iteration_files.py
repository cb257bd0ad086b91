"""`tspin_trl/self_play/iteration_files.py`: the iteration files are used only when intact and this run's."""

from tests.support import sorting_rows
from tspin_trl.data import TripletDataset, TripletTokenizer, eos_token_ids
from tspin_trl.run_folder import RunFolder
from tspin_trl.self_play import IterationFiles


def _examples(tokenizer, n=3):
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer))
    rows = [{"prompt": r["prompt"], "real": r["completion"][0]["content"]} for r in sorting_rows(n)]
    return TripletDataset([encode(row, i) for i, row in enumerate(rows)])


def test_iteration_files_are_used_only_when_intact_and_this_runs(tmp_path, tokenizer):
    dataset = _examples(tokenizer)
    dataset.set_column("synthetic_ids", [[5, 6], [7], [8, 9, 10]])
    dataset.set_column("ref_real_logps", [-1.0, -2.0, -3.0])
    files = IterationFiles(RunFolder(str(tmp_path)), vocab_size=len(tokenizer), identity_digest="run-a")
    rows = files.rows_of(dataset, tokenizer)
    assert rows[0]["synthetic"] == tokenizer.decode([5, 6], skip_special_tokens=True)
    files.write(1, "train", rows, {"global_step": 4})
    assert files.read(1, "train", 3) == rows
    assert files.read(1, "train", 4) is None, "another number of examples"
    assert files.read(2, "train", 3) is None, "absent"
    fresh = _examples(tokenizer)
    files.load_into(files.read(1, "train", 3), fresh)
    assert fresh.column("synthetic_ids") == [[5, 6], [7], [8, 9, 10]] and fresh.column("ref_real_logps")[2] == -3.0
    other_run = IterationFiles(files.folder, len(tokenizer), identity_digest="run-b")
    assert other_run.read(1, "train", 3) is None

    def written_with(bad_row):
        files.write(1, "train", [bad_row] + rows[1:], {})
        return files.read(1, "train", 3)

    assert written_with(rows[0] | {"synthetic_ids": []}) is None, "generation never yields an empty response"
    assert written_with(rows[0] | {"synthetic_ids": [len(tokenizer)]}) is None, "outside the vocabulary"
    assert written_with(rows[0] | {"synthetic_ids": [True]}) is None
    assert written_with(rows[0] | {"ref_real_logps": float("inf")}) is None
    files.write(1, "train", rows, {})
    path = files.path(1, "train")
    with open(path, "a") as f:
        f.write("\n")  # any change to the bytes breaks the checksum
    assert files.read(1, "train", 3) is None
