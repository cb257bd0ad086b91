"""`tspin_trl/checked_io.py`: atomic writes, checksummed JSONL with a sidecar, tolerant logs."""

import errno
import multiprocessing
import os
from pathlib import Path

import pytest

from tspin_trl.checked_io import atomic_write, read_checked_jsonl, read_jsonl


def _write_many(path: str, tag: str, count: int) -> None:
    for i in range(count):
        atomic_write(path, f"{tag} {i}\n")


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(path, tag, 2000)) for tag in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert Path(path).read_text().split()[0] in ("a", "b")
    assert not list(tmp_path.glob("*.tmp"))


def test_a_sidecar_that_is_not_an_object_is_ignored(tmp_path):
    data, meta = tmp_path / "x.jsonl", tmp_path / "x.json"
    data.write_text("[1]\n")
    meta.write_text("[1, 2]")
    assert read_checked_jsonl(str(data), str(meta)) is None


def test_plot_logs_tolerate_a_truncated_last_line(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text('{"loss": 1.0, "step": 1}\n{"loss": 0.5, "st')
    assert read_jsonl(str(path)) == [{"loss": 1.0, "step": 1}]


def test_a_full_disk_error_names_the_file(tmp_path, monkeypatch):
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    target = str(tmp_path / "self_play" / "iteration_1" / "train.jsonl")
    with pytest.raises(OSError, match=f"No space left on device.*{target}") as raised:
        atomic_write(target, "x" * 100_000)
    assert raised.value.errno == errno.ENOSPC
    assert not list((tmp_path / "self_play" / "iteration_1").glob("*.tmp"))


def test_following_the_umask_leaves_what_a_link_points_to_alone(tmp_path):
    import stat

    from tspin_trl.checked_io import follow_umask

    target = tmp_path / "elsewhere"
    target.write_text("not part of the checkpoint")
    target.chmod(0o600)
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "weights").write_text("w")
    (folder / "link").symlink_to(target)
    old = os.umask(0o022)
    try:
        follow_umask(str(folder))
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / "weights").stat().st_mode) == 0o644
    assert stat.S_IMODE(target.stat().st_mode) == 0o600, "a link's target is not the checkpoint's to change"


def _append_past_a_size_limit(path: str) -> None:
    import resource
    import signal

    from tspin_trl.checked_io import append_jsonl

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, part-way
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 20, resource.RLIM_INFINITY))
    try:
        append_jsonl(path, {"text": "x" * 200})
    except OSError as error:
        assert error.errno == errno.EFBIG and path in str(error), error
        os._exit(3)
    os._exit(0)


def test_an_append_that_fails_part_way_leaves_no_half_line(tmp_path):
    from tspin_trl.checked_io import append_jsonl

    path = str(tmp_path / "iterations.jsonl")
    append_jsonl(path, {"iteration": 0})
    before = Path(path).read_bytes()
    child = multiprocessing.get_context("fork").Process(target=_append_past_a_size_limit, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == 3, "the append failed with the file named"
    assert Path(path).read_bytes() == before, "cut back to the last complete line"
    append_jsonl(path, {"iteration": 1})
    assert list(read_jsonl(path)) == [{"iteration": 0}, {"iteration": 1}]
