"""The report's training settings table, read from the runs' spec.json as a run writes it."""

from __future__ import annotations

import json

from flaxbench.report import write_report
from flaxbench.spec import apply_overrides, load_spec_file, to_json
from tests.helpers import REPO

from .factory import make_results, write_results


def _write_run(folder, spec_file, overrides, *, seed=0):
    """A results.json of `spec_file` with `overrides`, and the spec.json a run of it writes beside it."""
    spec = load_spec_file(REPO / "specs" / spec_file)
    apply_overrides(spec, {**overrides, "seed": seed})
    write_results(folder / "results.json", make_results(spec.name, seed=seed))
    (folder / "spec.json").write_text(to_json(spec))


def _table(text):
    """{row name: cells} of the report's settings table."""
    section = text.split("## How each row was trained", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    return {line.split("`")[1]: [cell.strip() for cell in line.strip("|").split(" | ")[1:]] for line in lines}


def test_each_row_states_how_it_was_trained(tmp_path):
    for seed in (0, 1):
        _write_run(tmp_path / "resnet18" / f"seed_{seed}", "resnet18.py", {}, seed=seed)
    _write_run(tmp_path / "vit_p15", "vit_p15.py", {"train.optimizer": "sgd", "train.label_smoothing": 0.1,
                                                     "train.select_by": "val_loss", "data.augment": ()})
    paths = write_report(tmp_path, tmp_path / "out")
    rows = _table(paths["md"].read_text())
    model, tiles, split, training, augment, other, seeds = rows["resnet18"]
    assert model == "resnet18" and tiles == "native size, imagenet normalisation"
    assert split == "2550 / 600 / 600, split seed 0"
    assert training.startswith("30 epochs, batch ") and "adamw, learning rate " in training
    assert augment == "hflip, vflip, rot90" and other == "—" and seeds == "0, 1"
    vit = rows["vit_p15"]
    assert vit[0].startswith("vit (") and "patch_size=15" in vit[0]
    assert "sgd (momentum 0.9)" in vit[3] and vit[4] == "none"
    assert vit[5] == "label_smoothing=0.1, select_by=val_loss"
    settings = json.loads(paths["json"].read_text())["settings"]
    assert settings["vit_p15"]["other"] == {"label_smoothing": 0.1, "select_by": "val_loss"}
    assert settings["resnet18"]["seeds"] == [0, 1] and settings["resnet18"]["init"] == "imagenet"


def test_a_row_without_spec_json_says_so(tmp_path):
    write_results(tmp_path / "old" / "results.json", make_results("old"))
    rows = _table(write_report(tmp_path, tmp_path / "out")["md"].read_text())
    assert rows["old"][0] == "— (no spec.json beside its results.json)"
