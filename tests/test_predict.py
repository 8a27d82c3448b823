"""`python -m flaxbench predict` on real Kather 2016 tiles with a tiny trained run."""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline import canonical_class_name, load_image
from tests.helpers import SHARED_DATA, run_cli, tiny_spec

KATHER = SHARED_DATA / "kather2016_sample"
NCT = SHARED_DATA / "nct_crc_he_sample"
IMAGE_SIZE = 32

pytestmark = pytest.mark.skipif(not KATHER.is_dir(), reason=f"sample tiles not found at {KATHER}")


def sample_classes() -> list[str]:
    """The eight class names of the sample folder, in label order (sorted folders)."""
    return [canonical_class_name(d.name) for d in sorted(KATHER.iterdir()) if d.is_dir()]


def sample_tiles() -> list[Path]:
    """Every tile of the Kather 2016 sample."""
    return sorted(p for p in KATHER.rglob("*.tif"))


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> dict[str, str]:
    """Environment sharing one JAX compilation cache between this module's predict calls.

    Both calls build the same model; the second reads the compiled random inits from the cache.
    """
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Workdir of a one-epoch ConvModel trained on all eight sample classes at 32 px."""
    from flaxbench.train.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("kather_run")
    spec = tiny_spec(**{
        "data.source": f"folder:{KATHER}", "data.classes": None, "data.split": (8, 8, 8),
        "data.image_size": IMAGE_SIZE, "train.epochs": 1, "train.batch_size": 8,
    })
    train_and_evaluate(spec, workdir, log=lambda line: None)
    return workdir


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory) -> dict[str, Path]:
    """A folder with a text file and a truncated TIFF, a 224 px NCT tile and its 32 px resize."""
    folder = tmp_path_factory.mktemp("odd")
    bad = folder / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image\n")
    for clutter in (".DS_Store", "Thumbs.db", "._notes.tif"):  # ignored as a folder source ignores them
        (bad / clutter).write_bytes(b"\0\1")
    tile = sample_tiles()[0].read_bytes()
    (bad / "truncated.tif").write_bytes(tile[: len(tile) // 2])
    inputs = {"bad_dir": bad, "notes": bad / "notes.txt", "truncated": bad / "truncated.tif"}
    nct_tiles = sorted(NCT.rglob("*.tif")) if NCT.is_dir() else []
    if nct_tiles:
        large = folder / "nct_224.tif"
        shutil.copy(nct_tiles[0], large)
        small = folder / "nct_resized_32.png"
        Image.fromarray(load_image(large, IMAGE_SIZE)).save(small)  # lossless: same pixels
        inputs.update(large=large, small=small)
    return inputs


@pytest.fixture(scope="module")
def prediction(trained_run, odd_inputs, tmp_path_factory, jax_cache):
    """(process, CSV rows) of one predict call over the sample, the odd files and the NCT tiles."""
    out = tmp_path_factory.mktemp("preds") / "preds.csv"
    extra = [str(odd_inputs[k]) for k in ("large", "small") if k in odd_inputs]
    proc = run_cli("predict", f"--workdir={trained_run}", str(KATHER), str(odd_inputs["bad_dir"]), *extra,
                   f"--out={out}", env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with out.open(newline="") as stream:
        rows = list(csv.reader(stream))
    return proc, rows


def test_csv_has_a_probability_column_per_class_in_label_order(prediction):
    _, rows = prediction
    classes = sample_classes()
    assert len(classes) == 8
    assert rows[0] == ["path", "predicted_class", *[f"prob_{c}" for c in classes]]


def test_one_row_per_readable_tile_with_probabilities_summing_to_one(prediction, odd_inputs):
    proc, rows = prediction
    body = rows[1:]
    by_path = {row[0]: row for row in body}
    assert len(by_path) == len(body)
    expected = {str(p) for p in sample_tiles()} | {str(odd_inputs[k]) for k in ("large", "small") if k in odd_inputs}
    assert len(sample_tiles()) == 24
    assert set(by_path) == expected
    classes = sample_classes()
    for row in body:
        probs = np.array([float(x) for x in row[2:]])
        assert probs.shape == (8,) and np.all(probs >= 0)
        assert abs(probs.sum() - 1.0) < 1e-4, row
        assert row[1] == classes[int(probs.argmax())]
    assert f"predicted {len(body)} tiles (2 skipped)" in proc.stdout


def test_unreadable_files_are_named_on_stderr_and_skipped(prediction, odd_inputs):
    proc, rows = prediction
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2, proc.stderr
    for key in ("notes", "truncated"):
        assert any(str(odd_inputs[key]) in line for line in skipped), proc.stderr
        assert str(odd_inputs[key]) not in {row[0] for row in rows}
    assert "Traceback" not in proc.stderr


def test_larger_tile_is_resized_like_training_before_predicting(prediction, odd_inputs):
    if "large" not in odd_inputs:
        pytest.skip(f"NCT sample tiles not found at {NCT}")
    _, rows = prediction
    by_path = {row[0]: row for row in rows[1:]}
    assert Image.open(odd_inputs["large"]).size == (224, 224)
    # The 224 px tile predicts exactly like its 32 px resize made by the training loader.
    assert by_path[str(odd_inputs["large"])][1:] == by_path[str(odd_inputs["small"])][1:]


def test_workdir_without_checkpoints_is_a_one_line_error(trained_run, tmp_path, jax_cache):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    for name in ("spec.json", "data.json"):
        shutil.copy(trained_run / name, untrained / name)
    proc = run_cli("predict", f"--workdir={untrained}", str(KATHER), f"--out={tmp_path / 'p.csv'}", env=jax_cache)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert "checkpoint" in err and str(untrained) in err
    assert not (tmp_path / "p.csv").exists()


def test_no_readable_tile_is_an_error_and_keeps_an_earlier_csv(trained_run, odd_inputs, tmp_path, jax_cache):
    out = tmp_path / "earlier.csv"
    out.write_text("path,predicted_class\nkept,tumor\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("predict", f"--workdir={trained_run}", str(empty), str(odd_inputs["bad_dir"]), f"--out={out}",
                   "--overwrite", env=jax_cache)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no readable tiles" in proc.stderr.strip().splitlines()[-1]
    assert out.read_text() == "path,predicted_class\nkept,tumor\n"


def test_an_existing_csv_is_kept_unless_overwrite(trained_run, tmp_path, jax_cache):
    out = tmp_path / "earlier.csv"
    out.write_text("path,predicted_class\nkept,tumor\n")
    refused = run_cli("predict", f"--workdir={trained_run}", str(KATHER), f"--out={out}", env=jax_cache)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "already exists" in refused.stderr.strip().splitlines()[-1] and "--overwrite" in refused.stderr
    assert out.read_text() == "path,predicted_class\nkept,tumor\n"
    missing = run_cli("predict", f"--workdir={trained_run}", str(tmp_path / "nope"), f"--out={out}", env=jax_cache)
    assert f"'{tmp_path / 'nope'}' does not exist" in missing.stderr.strip().splitlines()[-1]  # named before --out
    replaced = run_cli("predict", f"--workdir={trained_run}", str(KATHER), f"--out={out}", "--overwrite", env=jax_cache)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert out.read_text().startswith("path,predicted_class,prob_")


def test_out_naming_a_folder_is_a_one_line_error(trained_run, tmp_path, jax_cache):
    proc = run_cli("predict", f"--workdir={trained_run}", str(KATHER), f"--out={tmp_path}", env=jax_cache)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is a folder; give a file name" in proc.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_tiles_in_a_zip_predict_as_the_same_tiles_in_a_folder(prediction, trained_run, odd_inputs, tmp_path,
                                                               jax_cache):
    _, folder_rows = prediction
    from_folder = {row[0]: row[1:] for row in folder_rows[1:]}
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for tile in sample_tiles():
            zf.write(tile, tile.relative_to(KATHER).as_posix())
        zf.write(odd_inputs["truncated"], "bad/truncated.tif")
        zf.writestr("bad/notes.txt", "not an image\n")
        zf.writestr("__MACOSX/01_TUMOR/._x.tif", b"\0\1")  # ignored, as a folder source ignores it
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\3\4 cut short")
    out = tmp_path / "zip.csv"
    proc = run_cli("predict", f"--workdir={trained_run}", str(archive), str(damaged), f"--out={out}", env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with out.open(newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    assert {row[0] for row in rows} == {f"{archive}:{t.relative_to(KATHER).as_posix()}" for t in sample_tiles()}
    for row in rows:
        assert row[1:] == from_folder[str(KATHER / row[0].split(":", 1)[1])], row[0]
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 3, proc.stderr
    for name in (f"{archive}:bad/truncated.tif", f"{archive}:bad/notes.txt", f"{damaged} (not a readable zip"):
        assert any(name in line for line in skipped), proc.stderr


def test_a_stain_normalised_run_predicts_its_test_tiles_as_it_evaluated_them(tmp_path, jax_cache):
    from flaxbench.train.loop import train_and_evaluate

    spec = tiny_spec(**{
        "data.source": f"folder:{KATHER}", "data.classes": ("tumor", "stroma", "complex", "mucosa"),
        "data.split": (4, 4, 4), "data.image_size": IMAGE_SIZE, "data.stain_normalize": "macenko",
        "train.epochs": 1, "train.batch_size": 4,
    })
    results = train_and_evaluate(spec, tmp_path / "run", log=lambda line: None)
    assert "stain_normalization" in (tmp_path / "run" / "data.json").read_text()
    tested = results["test_predictions"]
    out = tmp_path / "p.csv"
    proc = run_cli("predict", f"--workdir={tmp_path / 'run'}", *[str(KATHER / tile) for tile in tested["ids"]],
                   f"--out={out}", env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with out.open(newline="") as stream:
        rows = {Path(row["path"]).relative_to(KATHER).as_posix(): row for row in csv.DictReader(stream)}
    for tile, probabilities in zip(tested["ids"], tested["probabilities"]):
        predicted = [float(rows[tile][f"prob_{c}"]) for c in results["classes"]]
        np.testing.assert_allclose(predicted, probabilities, atol=2e-6)


def test_group_by_writes_the_mean_probabilities_of_each_slide(trained_run, tmp_path, jax_cache):
    out = tmp_path / "p.csv"
    wrong = run_cli("predict", f"--workdir={trained_run}", str(KATHER), f"--out={out}", "--group-by=Patient(\\d+)",
                    env=jax_cache)
    assert wrong.returncode != 0 and "--group-by 'Patient(\\d+)' finds no group in tile" in wrong.stderr
    assert not out.exists()  # nothing written
    proc = run_cli("predict", f"--workdir={trained_run}", str(KATHER), f"--out={out}",
                   "--group-by=CRC-Prim-HE-\\d+", env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with out.open(newline="") as stream:
        tiles = list(csv.DictReader(stream))
    with (tmp_path / "p_groups.csv").open(newline="") as stream:
        groups = {row["group"]: row for row in csv.DictReader(stream)}
    assert sorted(groups) == [f"CRC-Prim-HE-{k:02d}" for k in range(1, 11)]
    assert sum(int(row["tiles"]) for row in groups.values()) == len(tiles) == 24
    columns = [c for c in tiles[0] if c.startswith("prob_")]
    of_07 = [row for row in tiles if "CRC-Prim-HE-07" in row["path"]]
    mean = np.mean([[float(row[c]) for c in columns] for row in of_07], axis=0)
    np.testing.assert_allclose([float(groups["CRC-Prim-HE-07"][c]) for c in columns], mean, atol=2e-6)
    assert groups["CRC-Prim-HE-07"]["predicted_class"] == columns[int(mean.argmax())].removeprefix("prob_")


def test_predict_holds_a_bounded_number_of_tiles_and_chunks_do_not_change_the_csv(trained_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """A whole slide's tiles stream through: decoded tiles alive at once stay near two chunks, whatever their number.

    Progress is printed as chunks finish (here after every chunk)."""
    import weakref

    from data_pipeline import parallel
    from data_pipeline.sources import folder_source
    from flaxbench import inference
    from flaxbench.predict import predict_paths

    import os
    import shutil

    shutil.copytree(NCT, tmp_path / "nct_0")  # 432 tiles: the 108 as 4 files each (a path given twice counts once)
    for k in (1, 2, 3):
        shutil.copytree(tmp_path / "nct_0", tmp_path / f"nct_{k}", copy_function=os.link)
    paths = [str(tmp_path / f"nct_{k}") for k in range(4)]
    whole = predict_paths(trained_run, paths, tmp_path / "whole.csv")  # default chunk: every tile in one
    alive, most = [0], [0]
    decode = folder_source.decode_listed_tile

    def counted(*args, **kwargs):
        outcome = decode(*args, **kwargs)
        alive[0] += 1
        most[0] = max(most[0], alive[0])
        weakref.finalize(outcome[0], lambda: alive.__setitem__(0, alive[0] - 1))
        return outcome

    monkeypatch.setattr(folder_source, "decode_listed_tile", counted)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)  # the tiles decoded ahead depend on the threads
    monkeypatch.setattr(inference, "CHUNK_TILES", 16)
    monkeypatch.setattr(inference, "PROGRESS_EVERY_S", 0.0)
    capsys.readouterr()
    chunked = predict_paths(trained_run, paths, tmp_path / "chunked.csv", batch_size=8)
    ahead = parallel.TASKS_AHEAD_PER_WORKER * 2 * parallel.ITEMS_PER_TASK
    assert 16 <= most[0] <= 2 * 16 + ahead + 2 * parallel.ITEMS_PER_TASK < 432
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("classified ")]
    assert [line.split(" tiles")[0] for line in progress] == [f"classified {n} of 432" for n in range(16, 432, 16)]
    assert progress[0].endswith("min left")
    whole_rows, chunked_rows = (list(csv.reader(path.open(newline=""))) for path in (whole, chunked))
    assert len(whole_rows) == 433 and [r[:2] for r in whole_rows] == [r[:2] for r in chunked_rows]
    np.testing.assert_allclose(np.asarray([r[2:] for r in whole_rows[1:]], float),
                               np.asarray([r[2:] for r in chunked_rows[1:]], float), atol=2e-6)


def test_predict_splits_its_batches_over_the_local_devices(trained_run, tmp_path, jax_cache):
    """On 3 devices (--batch-size 64 rounded up to 66) the probabilities are those of one (the run's batch, 16)."""
    one, three = tmp_path / "one.csv", tmp_path / "three.csv"
    for out, devices, batch in ((one, 1, []), (three, 3, ["--batch-size=64"])):
        env = {**jax_cache, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        proc = run_cli("predict", f"--workdir={trained_run}", str(KATHER), str(NCT), f"--out={out}", *batch, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows_one, rows_three = (list(csv.reader(path.open(newline=""))) for path in (one, three))
    assert len(rows_one) == 1 + 24 + 108 and [r[:1] for r in rows_one] == [r[:1] for r in rows_three]
    np.testing.assert_allclose(np.asarray([r[2:] for r in rows_one[1:]], float),
                               np.asarray([r[2:] for r in rows_three[1:]], float), atol=1e-5)


def test_map_draws_each_slides_predicted_classes_where_its_tiles_lie(trained_run, tmp_path):
    """--map with --group-by: one PNG per slide (and per --map-class); bad input stops it before anything is written."""
    from flaxbench.errors import WorkdirError
    from flaxbench.predict import predict_paths

    slides = tmp_path / "slides"
    for k, tile in enumerate(sample_tiles()):
        slide = slides / f"slide_{k % 2}"
        slide.mkdir(parents=True, exist_ok=True)
        shutil.copy(tile, slide / f"x{(k // 2) % 4 * 150}_y{(k // 2) // 4 * 150}.tif")
    out = tmp_path / "out" / "preds.csv"
    with pytest.raises(WorkdirError, match="--map-class 'mucus' is not a class of the run"):
        predict_paths(trained_run, [str(slides)], out, group_by=r"slide_\d", map_xy=r"x(\d+)_y(\d+)",
                      map_classes="tumor,mucus")
    assert not out.parent.exists() or not any(out.parent.iterdir())
    predict_paths(trained_run, [str(slides)], out, group_by=r"slide_\d", map_xy=r"x(\d+)_y(\d+)",
                  map_classes="TUMOR")
    maps = out.with_name("preds_maps")
    assert sorted(p.name for p in maps.iterdir()) == ["slide_0.png", "slide_0_p_tumor.png", "slide_1.png",
                                                      "slide_1_p_tumor.png"]
    assert all(Image.open(p).format == "PNG" for p in maps.iterdir())
    out.unlink()
    out.with_name("preds_groups.csv").unlink()
    with pytest.raises(WorkdirError, match="preds_maps' already exists"):
        predict_paths(trained_run, [str(slides)], out, group_by=r"slide_\d", map_xy=r"x(\d+)_y(\d+)")
    (slides / "slide_0" / "overview.tif").write_bytes(sample_tiles()[0].read_bytes())
    fresh = tmp_path / "fresh" / "preds.csv"
    with pytest.raises(WorkdirError, match="finds nothing in tile '.*overview.tif'"):
        predict_paths(trained_run, [str(slides)], fresh, group_by=r"slide_\d", map_xy=r"x(\d+)_y(\d+)")
    assert not fresh.parent.exists() or not any(fresh.parent.iterdir())


def test_a_tile_reached_twice_through_the_paths_is_classified_once(tmp_path, capsys):
    import contextlib

    from flaxbench.predict import expand_paths
    from tests.data_pipeline.helpers import write_tiles, zip_folder

    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 2})
    archive = zip_folder(root, tmp_path / "tiles.zip")
    (tmp_path / "link").symlink_to(root)
    given = [str(root), str(root / "a" / "tile_0.png"), str(tmp_path / "link"), str(archive), str(archive)]
    with contextlib.ExitStack() as open_zips:
        tiles, skipped = expand_paths(given, open_zips)
        names = [tile.display for tile in tiles]
    assert names == [str(root / f) for f in ("a/tile_0.png", "a/tile_1.png", "b/tile_0.png", "b/tile_1.png")] + [
        f"{archive}:{f}" for f in ("a/tile_0.png", "a/tile_1.png", "b/tile_0.png", "b/tile_1.png")]
    assert not skipped
    assert "note: 9 file(s) reached more than once" in capsys.readouterr().err
