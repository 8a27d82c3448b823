"""`study --external`: every row tested on an external cohort once it has trained, and the report's lines."""

from __future__ import annotations

import json

import pytest

from flaxbench.errors import FlaxbenchError
from tests.test_study import ROWS, spec_files  # noqa: F401 (a module-scoped fixture shared with the study tests)


def test_external_tiles_test_every_row_once_and_land_in_the_report(spec_files, tmp_path):
    from flaxbench.study import run_study
    from tests.data_pipeline.helpers import write_tiles

    external = write_tiles(tmp_path / "cohort", {"TUM": 4, "stroma": 4, "other": 2}, size=24)
    study_dir = tmp_path / "study"
    with pytest.raises(FlaxbenchError, match="does not exist"):  # before any row trains
        run_study(spec_files, study_dir, external=str(tmp_path / "nope"), log=lambda line: None)
    assert not study_dir.exists()
    lines = []
    with pytest.raises(FlaxbenchError, match=r"^external evaluation \(\[1/2\] tiny_a\): --class-map maps 'tum' to "
                                             r"'tumour', which is not a class of the run"):
        run_study(spec_files, study_dir, external=str(external), class_map="TUM=tumour", log=lines.append)
    assert (study_dir / "report.md").is_file() and not list(study_dir.rglob("eval_external_*.json"))
    lines.clear()
    run_study(spec_files, study_dir, external=str(external), class_map="TUM=tumor", log=lines.append)
    for name in ROWS:
        result = json.loads((study_dir / name / "eval_external_cohort.json").read_text())
        assert result["tiles"] == 8 and result["left_out_folders"] == ["other"]
        assert result["class_folders"] == {"TUM": "tumor", "stroma": "stroma"}
    assert sum("external accuracy" in line for line in lines) == 2, lines
    report = json.loads((study_dir / "report.json").read_text())
    assert sorted(line["name"] for line in report["external"]) == sorted(ROWS)
    lines.clear()
    run_study(spec_files, study_dir, external=str(external), class_map="TUM=tumor", log=lines.append)
    assert sum("external evaluation kept" in line for line in lines) == 2, lines
    for option, made in (({"center_crop": 16}, "--center-crop None, not 16"),
                         ({"group_by": "tile_"}, "--group-by None, not 'tile_'")):
        with pytest.raises(FlaxbenchError, match=f"was made with {made}; delete it"):
            run_study(spec_files, study_dir, external=str(external), class_map="TUM=tumor", log=lines.append, **option)
    with pytest.raises(FlaxbenchError, match=r"study takes --class-map, --center-crop and --group-by only with "):
        run_study(spec_files, study_dir, group_by=r"tile_(\d)", log=lambda line: None)
    # another cohort's folder of the same name: a result of its own beside the first's, both in the report
    elsewhere = write_tiles(tmp_path / "elsewhere" / "cohort", {"TUM": 2, "stroma": 2}, size=24)
    run_study(spec_files, study_dir, external=str(elsewhere), class_map="TUM=tumor", log=lambda line: None)
    for name in ROWS:
        found = {json.loads(path.read_text())["external"]: json.loads(path.read_text())["tiles"]
                 for path in (study_dir / name).glob("eval_external_cohort*.json")}
        assert found == {str(external): 8, str(elsewhere): 4}
    report = json.loads((study_dir / "report.json").read_text())
    assert sorted(line["external"] for line in report["external"]) == sorted([str(external), str(elsewhere)] * 2)
