"""Writing run outputs atomically: results.json, spec.json, evaluation files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

RESULTS_FORMAT = "flaxbench.results/1"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write `obj` as JSON to `path` through a temporary file and a rename: never half-written."""
    return write_text_atomic(path, json.dumps(_plain(obj), indent=1))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename; the temporary file never stays."""
    with atomic_text_file(path) as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename; the temporary file never stays."""
    with atomic_text_file(path, binary=True) as f:
        f.write(data)
    return Path(path)


def _read_umask() -> int:
    """The process's file mode creation mask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_can_write(path: str | Path) -> None:
    """Fail at once, naming `path`, if no file can be made there; for work whose result it will hold, before the work.

    The nearest folder that exists is tried (the write itself makes the missing ones).
    """
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:  # named after the file meant, not the probe
        raise OSError(e.errno, e.strerror, str(path)) from None


UMASK = _read_umask()  # read once, at import, before any thread writes files (orbax's)


@contextlib.contextmanager
def atomic_text_file(path: str | Path, *, binary: bool = False) -> Iterator[TextIO]:
    """A text file (`binary`: a bytes file) to write that appears at `path` only when the block ends without an
    error (a rename).

    Until then `path` keeps what it held; the temporary file beside it never stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:  # named after the file meant, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's file is private (0600); a file written plainly is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
