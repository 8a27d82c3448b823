"""Which spec differences make two runs different runs."""

import pytest

from flaxbench.workdir import first_difference


@pytest.mark.parametrize(("section", "key", "before", "after"), [
    ("train", "data_placement", "device", "host"),  # where the tiles are held, not what is computed
    ("data", "duplicates", "warn", "off"),  # whether copies are looked for, not which tiles there are
    ("mesh", "data", 2, -1),  # how many devices share the batch, as -1 on another machine
])
def test_settings_that_change_no_number_are_not_a_difference(section, key, before, after):
    old = {"title": "A", section: {key: before, "epochs": 3}}
    assert first_difference(old, {"title": "B", section: {key: after, "epochs": 3}}) is None
    assert first_difference(old, {"title": "A", section: {"epochs": 3}}) is None  # a spec.json from before the key
    assert first_difference(old, {"title": "A", section: {key: before, "epochs": 4}}) == (f"{section}.epochs", 3, 4)
