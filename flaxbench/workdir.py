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
# what --overwrite clears, besides eval_<split>.json
RUN_OUTPUTS = ("results.json", "spec.json", "data.json", "checkpoints", "tensorboard", "predictions.csv")


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


def spec_difference(workdir: Path, spec: ml_collections.ConfigDict) -> str | None:
    """The first key where `spec` differs from the one saved in `workdir` (None if equal or none saved)."""
    saved = workdir / "spec.json"
    if not saved.exists():
        return None
    return _first_difference(json.loads(saved.read_text()), json.loads(to_json(spec)))


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


def check_workdir(workdir: str | Path, spec: ml_collections.ConfigDict, *, overwrite: bool) -> Path:
    """Fail unless `workdir` can take `spec`: new, resumable (same spec), or to be replaced (`overwrite`)."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir '{workdir}' exists and is not a directory")
    check_writable(workdir)
    if overwrite:
        return workdir
    if (workdir / "results.json").exists():
        raise WorkdirError(
            f"workdir '{workdir}' already holds results.json of a finished run; pass --overwrite to "
            "replace it or choose another --workdir"
        )
    if (workdir / "checkpoints").exists():
        diff = spec_difference(workdir, spec)
        if diff:
            raise WorkdirError(
                f"workdir '{workdir}' holds an unfinished run of another spec ({diff} differs); resume "
                "it with the same spec, pass --overwrite to start over, or choose another --workdir"
            )
    return workdir


def claim_workdir(workdir: Path, spec: ml_collections.ConfigDict, *, overwrite: bool) -> None:
    """Clear the previous run's outputs (`overwrite`) and save `spec`; call once the run is built.

    Clearing waits until then so that a spec or data error leaves the finished run untouched.
    In a multi-process run only the main process calls this.
    """
    if overwrite:
        for target in [*(workdir / name for name in RUN_OUTPUTS), *workdir.glob("eval_*.json")]:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_text_atomic(workdir / "spec.json", to_json(spec))
