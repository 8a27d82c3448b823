"""Finding, checking and grouping results.json files; bad files fail with a one-line error naming them."""

from __future__ import annotations

import json

import pytest

from flaxbench.errors import FlaxbenchError
from flaxbench.report.collect import collect_runs, load_results
from tests.report.factory import make_results, write_results


def test_finds_results_at_any_depth_and_groups_by_name(tmp_path):
    write_results(tmp_path / "a" / "results.json", make_results("a"))
    for seed in (2, 0, 1):
        write_results(tmp_path / "b" / f"seed_{seed}" / "results.json", make_results("b", seed=seed))
    write_results(tmp_path / "deep" / "x" / "y" / "results.json", make_results("c"))
    groups = collect_runs(tmp_path)
    assert [g.name for g in groups] == ["a", "b", "c"]
    assert [run.seed for run in groups[1].runs] == [0, 1, 2]
    assert groups[1].title == "b title"


def test_title_falls_back_to_name(tmp_path):
    results = make_results("plain")
    del results["title"]
    write_results(tmp_path / "results.json", results)
    assert collect_runs(tmp_path)[0].title == "plain"


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.json").write_text("{}")
    with pytest.raises(FlaxbenchError, match="no results.json found under"):
        collect_runs(tmp_path)


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FlaxbenchError, match="does not exist"):
        collect_runs(tmp_path / "nope")


def _assert_one_line_error_naming(path, match):
    with pytest.raises(FlaxbenchError, match=match) as info:
        load_results(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text('{"format": "flaxbench.results/1", "name": ')
    _assert_one_line_error_naming(path, "not valid JSON")
    with pytest.raises(FlaxbenchError, match="not valid JSON"):
        collect_runs(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r.update(format="other/2"), "key 'format'"),
        (lambda r: r.pop("name"), "key 'name'"),
        (lambda r: r.update(test_accuracy=79.5), "fraction in \\[0, 1\\]"),
        (lambda r: r.update(test_loss="low"), "key 'test_loss'"),
        (lambda r: r.pop("train_time_s"), "key 'train_time_s'"),
        (lambda r: r.update(flops_per_image="big"), "key 'flops_per_image'"),
        (lambda r: r.update(device=1), "key 'device' must be a string"),
        (lambda r: r.update(confusion_matrix=[[1, 2], [3, 4]]), "key 'confusion_matrix'"),
        (lambda r: r["test_predictions"]["labels"].pop(), "differ in length"),
        (lambda r: r["test_predictions"]["predictions"].__setitem__(0, 99), "class indices"),
        (lambda r: r.update(history=[{"train_loss": 1.0}]), "integer 'epoch'"),
        (lambda r: r.update(history=[{"epoch": 1, "val_loss": "high"}]), "history key 'val_loss'"),
    ],
)
def test_malformed_results_name_the_file_and_key(tmp_path, change, match):
    results = make_results("bad")
    change(results)
    path = write_results(tmp_path / "results.json", results)
    _assert_one_line_error_naming(path, match)


def test_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([1, 2]))
    _assert_one_line_error_naming(path, "JSON object")


def test_unreadable_file_is_a_flaxbench_error(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"\xff\xfe\x00bad")
    _assert_one_line_error_naming(path, "cannot read")


def test_null_optional_fields_are_accepted(tmp_path):
    results = make_results("sparse")
    results.update(flops_per_image=None, layers=None, test_loss=None, test_predictions=None, confusion_matrix=None)
    results["history"] = [{"epoch": 1, "val_loss": None, "note": "text the report does not read"}]
    path = write_results(tmp_path / "results.json", results)
    assert load_results(path)["flops_per_image"] is None


def test_duplicate_seed_for_one_name_is_an_error(tmp_path):
    write_results(tmp_path / "x" / "results.json", make_results("same", seed=0))
    write_results(tmp_path / "y" / "results.json", make_results("same", seed=0))
    with pytest.raises(FlaxbenchError, match="two results for 'same' with seed 0"):
        collect_runs(tmp_path)


def test_runs_of_one_name_must_share_data(tmp_path):
    write_results(tmp_path / "s0" / "results.json", make_results("mixed", seed=0, synthetic=True))
    write_results(tmp_path / "s1" / "results.json", make_results("mixed", seed=1, synthetic=False))
    with pytest.raises(FlaxbenchError, match="disagree on 'source'"):
        collect_runs(tmp_path)


@pytest.mark.parametrize("key, other", [("epochs", 30), ("params", 999), ("model", "resnet18")])
def test_seeds_of_one_name_must_share_model_and_training(tmp_path, key, other):
    write_results(tmp_path / "s0" / "results.json", make_results("row", seed=0))
    write_results(tmp_path / "s1" / "results.json", {**make_results("row", seed=1), key: other})
    with pytest.raises(FlaxbenchError, match=f"disagree on '{key}'"):
        collect_runs(tmp_path)


def test_seeds_of_one_name_must_share_every_setting_of_their_spec(tmp_path):
    for seed, learning_rate in ((0, 1e-3), (1, 1e-3), (2, 1e-2)):
        run = tmp_path / f"s{seed}"
        write_results(run / "results.json", make_results("row", seed=seed))
        spec = {"name": "row", "seed": seed, "train": {"learning_rate": learning_rate, "epochs": 3}}
        (run / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(FlaxbenchError, match=r"differ in more than their seed: spec.train.learning_rate is 0.001 "
                                             r"in .*s1 and 0.01 in .*s2"):
        collect_runs(tmp_path)
    (tmp_path / "s2" / "results.json").unlink()
    assert [run.seed for run in collect_runs(tmp_path)[0].runs] == [0, 1]  # the seed alone may differ


def test_seeds_fed_from_device_or_host_or_retitled_share_a_row(tmp_path):
    # spec.train.data_placement changes where batches come from, spec.title the label, not the numbers
    for seed, placement in ((0, None), (1, "host"), (2, "device")):
        run = tmp_path / f"s{seed}"
        write_results(run / "results.json", make_results("row", seed=seed))
        spec = {"name": "row", "title": f"Row {seed}", "seed": seed, "train": {"data_placement": placement, "epochs": 3}}
        (run / "spec.json").write_text(json.dumps(spec))
    assert [run.seed for run in collect_runs(tmp_path)[0].runs] == [0, 1, 2]


def test_seeds_on_the_same_tiles_read_from_different_folders_share_a_row(tmp_path):
    digests = {"train": "1", "val": "2", "test": "3"}
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        source = f"folder:/scratch/job{seed}/tiles"
        write_results(run / "results.json", {**make_results("row", seed=seed), "source": source})
        spec = {"name": "row", "seed": seed, "data": {"source": source, "split_seed": 0}}
        (run / "spec.json").write_text(json.dumps(spec))
        (run / "data.json").write_text(json.dumps({"source": source, "split_digests": digests}))
    assert [run.seed for run in collect_runs(tmp_path)[0].runs] == [0, 1]
    (tmp_path / "s1" / "data.json").write_text(json.dumps({"split_digests": {**digests, "test": "4"}}))
    with pytest.raises(FlaxbenchError, match="disagree on 'source'"):
        collect_runs(tmp_path)
    same_source = {**make_results("row", seed=1), "source": "folder:/scratch/job0/tiles"}
    (tmp_path / "s1" / "results.json").write_text(json.dumps(same_source))
    with pytest.raises(FlaxbenchError, match="trained on different tiles"):
        collect_runs(tmp_path)


def test_seeds_whose_tiles_share_names_but_not_pixels_are_not_one_row(tmp_path):
    from flaxbench.seen_tiles import save_tile_digests

    digests = {"train": "1", "val": "2", "test": "3"}
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        write_results(run / "results.json", make_results("row", seed=seed))
        (run / "data.json").write_text(json.dumps({"split_digests": digests}))
        pixels = {name: [bytes([k, seed if name == "test" and k == 0 else 0] + [0] * 14) for k in range(3)]
                  for name in ("train", "val", "test")}
        save_tile_digests(run, pixels)
    with pytest.raises(FlaxbenchError, match=r"tiles of the same names but other pixels \(their tile_digests.npz"):
        collect_runs(tmp_path)
    (tmp_path / "s1" / "tile_digests.npz").unlink()  # a run that kept none is not compared
    assert [run.seed for run in collect_runs(tmp_path)[0].runs] == [0, 1]
