"""Checked file I/O and digests: atomic writes, checksummed JSONL with a sidecar, tolerant JSONL logs.

Writers go through [`atomic_write`] (a unique temporary name in the target folder, then a rename), so a file that
exists is complete and two writers of the same path never rename each other's temporary file. Files are created with
the user's umask, like everything else in `output_dir` (a teammate can read a run or a shared cache). Readers of
`*.jsonl` logs tolerate a truncated last line (a process killed while writing). An I/O error names the path.
"""

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any


logger = logging.getLogger(__name__)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value`."""
    return sha256_hex(json.dumps(value, sort_keys=True, default=str).encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, content: str) -> None:
    """Write a file under a unique temporary name in the same folder and rename it: a file that exists is complete,
    and concurrent writers of the same path never rename each other's temporary file. The file gets the mode a plain
    `open(path, "w")` would give it (the umask applies; `mkstemp` alone would make it private)."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    except OSError as error:
        raise _with_path(error, path) from error
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise _with_path(error, path) from error
        raise


def follow_umask(directory: str) -> None:
    """Give every file under `directory` the mode a plain `open(path, "w")` gives (the umask applies): some writers
    create private files (`safetensors` writes `model.safetensors` as 0600), so a teammate could not read a checkpoint
    the rest of which they can."""
    mode = 0o666 & ~_umask()
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path):  # `chmod` would change what it points to, wherever that is
                continue
            with contextlib.suppress(OSError):  # a file removed meanwhile, or one this user does not own
                os.chmod(path, mode)


def _with_path(error: OSError, path: str) -> OSError:
    """The same error, naming the file it was about (`[Errno 28] No space left on device` alone names no disk)."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, f"{error.strerror} (writing {path})", path)


def remove_stale_temporaries(directory: str) -> int:
    """Remove the temporary files [`atomic_write`] leaves when its process is killed between writing and renaming
    (`<name>.<random>.tmp`) anywhere under `directory`. Call it only where no writer can be running (under the lock
    that guards the folder). Returns how many were removed."""
    removed = 0
    for root, _, names in os.walk(directory):
        for name in names:
            if name.endswith(".tmp") and name.count(".") >= 2:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                    removed += 1
    if removed:
        logger.info("Removed %d temporary file(s) of an interrupted writer under %s.", removed, directory)
    return removed


def write_checked_jsonl(data_path: str, meta_path: str, rows: Sequence[Any], meta: dict[str, Any]) -> None:
    """Write `rows` as JSONL, then a JSON sidecar with `meta`, their SHA-256 and count (written last: it marks the
    pair complete)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(data_path, text)
    atomic_write(meta_path, json.dumps({**meta, "sha256": sha256_hex(text.encode()), "count": len(rows)}, indent=2))


def read_checked_jsonl(data_path: str, meta_path: str) -> tuple[list[Any], dict[str, Any]] | None:
    """The rows and sidecar written by [`write_checked_jsonl`]; `None` when absent or, with a warning, when the
    sidecar is not a JSON object or the checksum or count does not match (a truncated or corrupted file is never
    used)."""
    if not (os.path.isfile(data_path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError(f"the sidecar {meta_path} is a JSON {type(meta).__name__}, not an object")
        with open(data_path, "rb") as f:
            raw = f.read()
        if sha256_hex(raw) != meta.get("sha256"):
            raise ValueError("checksum mismatch")
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if len(rows) != meta.get("count"):
            raise ValueError(f"{len(rows)} rows, {meta.get('count')} expected")
    except (ValueError, UnicodeDecodeError, OSError) as error:  # JSONDecodeError is a ValueError
        logger.warning("Ignoring %s (%s).", data_path, error)
        return None
    return rows, meta


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Records of a JSONL log; a line that does not parse (the last one of a killed writer) is skipped with a
    warning."""
    if not os.path.isfile(path):
        return []
    records, bad = [], 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
    if bad:
        logger.warning("Skipped %d unreadable line(s) of %s (a writer was killed mid-line?).", bad, path)
    return records


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    """Append `record` as one line to `path`, all or nothing: a write that fails part-way (a full disk, a file-size
    limit) is cut back to the file's previous end, so that no half line is left for the next reader to skip."""
    line = (json.dumps(record) + "\n").encode()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                written = 0
                while written < len(line):
                    written += f.write(line[written:])
            except OSError:
                try:
                    f.truncate(end)
                except OSError:  # the reader still skips a half line, with a warning
                    pass
                raise
    except OSError as error:
        raise _with_path(error, path) from error


def valid_token_ids(value: Any, vocab_size: int) -> bool:
    """Whether `value` is a non-empty list of token ids of a vocabulary of `vocab_size` tokens (generation always
    yields at least one token, and a real response at least its end-of-sequence token)."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(token, int) and not isinstance(token, bool) and 0 <= token < vocab_size for token in value)
    )
