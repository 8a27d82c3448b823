"""The run directory: refuse to clobber results, check it is writable, keep the resolved spec."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import ml_collections

from flaxbench.errors import WorkdirError
from flaxbench.results import write_text_atomic
from flaxbench.spec import to_json

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the largest study row need about this much
RUN_OUTPUTS = ("results.json", "spec.json", "checkpoints", "tensorboard")


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"spec.{prefix}{key} ({a!r} before, {b!r} now)"
    return None


def check_writable(workdir: Path) -> None:
    """Fail before training if `workdir` cannot be written or its disk is nearly full."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise WorkdirError(f"workdir '{workdir}' is not writable ({e.strerror}); choose another --workdir") from None
    free = shutil.disk_usage(workdir).free
    if free < MIN_FREE_BYTES:
        raise WorkdirError(
            f"workdir '{workdir}' has only {free / 2**20:.0f} MiB free disk; free space or choose another --workdir"
        )


def prepare_workdir(
    workdir: str | Path, spec: ml_collections.ConfigDict, *, overwrite: bool, main_process: bool = True
) -> Path:
    """Ready `workdir` for `spec`: new, resumable (same spec), or cleared with `overwrite`.

    In a multi-process run every process checks the (shared) workdir but only the main one
    clears it and writes spec.json; the others skip the checks that clearing would change.
    """
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir '{workdir}' exists and is not a directory")
    if overwrite and not main_process:
        check_writable(workdir)
        return workdir
    if overwrite:
        for name in RUN_OUTPUTS:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if (workdir / "results.json").exists():
        raise WorkdirError(
            f"workdir '{workdir}' already holds results.json of a finished run; pass --overwrite to "
            "replace it or choose another --workdir"
        )
    check_writable(workdir)
    spec_json = to_json(spec)
    saved = workdir / "spec.json"
    if saved.exists() and (workdir / "checkpoints").exists():
        diff = _first_difference(json.loads(saved.read_text()), json.loads(spec_json))
        if diff:
            raise WorkdirError(
                f"workdir '{workdir}' holds an unfinished run of another spec ({diff} differs); resume "
                "it with the same spec, pass --overwrite to start over, or choose another --workdir"
            )
    if main_process:
        write_text_atomic(saved, spec_json)
    return workdir
