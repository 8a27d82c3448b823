"""Spec loading, overrides and validation."""

import re

import pytest

from flaxbench.errors import SpecError
from flaxbench.spec import apply_overrides, from_json, load_spec_file, to_json
from tests.helpers import REPO, load_repo_spec

STUDY_SPECS = ["vit_p10", "vit_p15", "convmodel", "resnet18", "alexnet", "googlenet", "densenet121",
               "resnet50", "efficientnet_b4", "demo"]


@pytest.mark.parametrize("name", STUDY_SPECS)
def test_every_spec_loads_with_its_file_name_and_a_documented_command(name):
    spec = load_repo_spec(name)
    assert spec.name == name
    text = (REPO / "specs" / f"{name}.py").read_text()
    assert f"python -m flaxbench --spec specs/{name}.py" in text


def test_study_specs_share_the_study_settings():
    for name in STUDY_SPECS[:-1]:
        spec = load_repo_spec(name)
        assert spec.train.epochs == 30
        assert tuple(spec.data.classes) == ("tumor", "stroma", "complex", "lympho", "debris", "mucosa")
        assert tuple(spec.data.split) == (2550, 600, 600)
        assert spec.data.image_size is None


def test_overrides_are_applied_and_type_checked():
    spec = load_repo_spec("vit_p15")
    apply_overrides(spec, ["train.epochs=3", "model.options.patch_size=10", "data.image_size=100"])
    assert (spec.train.epochs, spec.model.options.patch_size, spec.data.image_size) == (3, 10, 100)
    with pytest.raises(SpecError, match="spec.train.epochs' cannot take 'many': it takes values like 3"):
        apply_overrides(spec, ["train.epochs='many'"])
    # A bare word for a tuple key: the error shows the tuple syntax with the key's current value.
    with pytest.raises(SpecError, match=re.escape(
            "cannot take 'hflip': it takes a tuple, written as Python does: "
            "--spec.data.augment=\"('hflip', 'vflip', 'rot90')\"")):
        apply_overrides(spec, ["data.augment=hflip"])
    # Where a key takes something else too, the error says what.
    with pytest.raises(SpecError, match=re.escape("cannot take 'all': it takes a tuple, written as Python does: "
                                                  "--spec.data.classes=\"('tumor',")) as error:
        apply_overrides(spec, ["data.classes=all"])
    assert str(error.value).endswith(", or None for every class of the source")
    # A key whose default is None names the type it takes.
    with pytest.raises(SpecError, match=r"early_stopping_patience' cannot take 2\.5: it takes a whole number or None$"):
        apply_overrides(spec, ["train.early_stopping_patience=2.5"])
    with pytest.raises(SpecError, match=r"grad_clip_norm' cannot take 'off': it takes a number or None$"):
        apply_overrides(spec, ["train.grad_clip_norm=off"])


def test_misspelled_key_names_the_key():
    spec = load_repo_spec("vit_p15")
    with pytest.raises(SpecError, match=r"spec\.trian\.epochs"):
        apply_overrides(spec, ["trian.epochs=1"])


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="nope.py"):
        load_spec_file(tmp_path / "nope.py")


def test_spec_round_trips_through_json():
    spec = load_repo_spec("demo")
    again = from_json(to_json(spec))
    assert to_json(again) == to_json(spec)


def test_command_line_overrides_set_none_and_override_none():
    spec = load_repo_spec("convmodel")
    apply_overrides(spec, ["data.classes=None", "data.image_size=None", "title=123", "train.epochs=3"])
    assert spec.data.classes is None and spec.data.image_size is None
    assert spec.title == "123" and spec.train.epochs == 3
    apply_overrides(spec, ["data.classes=('tumor','stroma')", "data.image_size=64"])
    assert spec.data.classes == ("tumor", "stroma") and spec.data.image_size == 64


@pytest.mark.parametrize("change, needle", [
    ("c.train.lr = 0.1", "has key 'train.lr', which flaxbench does not know"),
    ("c.train.epoch = 3", "did you mean 'train.epochs'?"),
    ("del c.train['deterministic']", "lacks 1 key of specs/common.py (train.deterministic)"),
    ("c = None", "must return an ml_collections.ConfigDict"),
    ("raise KeyError('x')", "get_config() in spec file"),
])
def test_a_spec_file_with_keys_flaxbench_does_not_know_or_lacks_is_refused(tmp_path, change, needle):
    path = tmp_path / "mine.py"
    path.write_text(f"""import runpy


def get_config():
    c = runpy.run_path({str(REPO / 'specs' / 'demo.py')!r})["get_config"]()
    with c.unlocked():
        {change}
    return c
""")
    with pytest.raises(SpecError, match=re.escape(needle)):
        load_spec_file(path)


def test_a_saved_spec_keeps_the_types_of_its_none_keys_and_a_dict_sets_a_sections_keys(tmp_path):
    spec = load_repo_spec("demo")
    apply_overrides(spec, ["data.image_size=None"])
    (tmp_path / "spec.json").write_text(to_json(spec))
    saved = load_spec_file(tmp_path / "spec.json")
    with pytest.raises(SpecError, match=re.escape("'spec.data.image_size' cannot take 32.0: it takes a whole number")):
        apply_overrides(saved, ["data.image_size=32.0"])
    apply_overrides(saved, ["data={'augment': (), 'image_size': 32}"])
    assert saved.data.augment == () and saved.data.image_size == 32 and saved.data.source == spec.data.source
