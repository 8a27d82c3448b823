"""Re-evaluate a finished or interrupted run from its checkpoint, without training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flaxbench.checkpoints import BEST, LAST, RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import split_metrics
from flaxbench.results import write_json_atomic
from flaxbench.runtime import is_main_process
from flaxbench.spec import from_json
from flaxbench.train.setup import build_run
from flaxbench.workdir import check_same_data, data_record

SPLITS = ("test", "val", "train")


def read_run_spec(workdir: str | Path):
    """The resolved spec saved in `workdir/spec.json`."""
    path = Path(workdir) / "spec.json"
    if not path.is_file():
        raise WorkdirError(f"'{path}' does not exist: is '{workdir}' a flaxbench run directory?")
    return from_json(path.read_text())


def evaluate_workdir(workdir: str | Path, split: str = "test", which: str = BEST) -> dict[str, Any]:
    """Metrics of `split` from the run's `which` checkpoint; also written to eval_<split>.json."""
    if split not in SPLITS:
        raise WorkdirError(f"--split '{split}' is unknown; use one of {', '.join(SPLITS)}")
    if which not in (BEST, LAST):
        raise WorkdirError(f"checkpoint '{which}' is unknown; use '{BEST}' or '{LAST}'")
    workdir = Path(workdir)
    spec = read_run_spec(workdir)
    run = build_run(spec, load_weights=False)
    check_same_data(workdir, data_record(run.dataset, run.splits))
    ckpts = RunCheckpoints(workdir / "checkpoints", read_only=True)
    restored = ckpts.restore(which, run.initial_state())
    ckpts.close()
    if restored is None:
        raise WorkdirError(f"no '{which}' checkpoint in '{workdir / 'checkpoints'}'; train the run first")
    state, _, epoch = restored
    data = run.splits[split]
    metrics = split_metrics(run.logits(split, state), data.labels, run.dataset.classes, data.ids)
    out = {"name": spec.name, "split": split, "checkpoint": which, "epoch": epoch,
           "source": run.dataset.source, "synthetic": bool(run.dataset.synthetic),
           "classes": list(run.dataset.classes), **metrics}
    if is_main_process():
        write_json_atomic(workdir / f"eval_{split}.json", out)
    return out
