"""Class-name canonicalisation and selection."""

import pytest

from data_pipeline import DataError, canonical_class_name
from data_pipeline.classes import check_unique, select_classes


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("01_TUMOR", "tumor"),
        ("08_EMPTY", "empty"),
        ("ADI", "adi"),
        ("  Tumor ", "tumor"),
        ("3 - Debris", "debris"),
        ("0", "0"),  # a purely numeric name is kept, not emptied
        ("2", "2"),
        ("3D", "3d"),  # digits without a separator are part of the name
    ],
)
def test_canonical_class_name(raw, expected):
    assert canonical_class_name(raw) == expected


def test_selection_orders_labels_as_requested():
    available = ("tumor", "stroma", "complex")
    assert select_classes(available, ["COMPLEX", "01_tumor"], "x") == ("complex", "tumor")
    assert select_classes(available, None, "x") == available


def test_matching_is_exact_not_fuzzy():
    with pytest.raises(DataError, match=r"class 'tumor' .* not in folder 'f'; available classes: adi, tum"):
        select_classes(("adi", "tum"), ["tumor"], "folder 'f'")


def test_duplicate_and_empty_requests_are_errors():
    with pytest.raises(DataError, match="'tumor' and 'TUMOR' are both class 'tumor'"):
        select_classes(("tumor",), ["tumor", "TUMOR"], "x")
    with pytest.raises(DataError, match="empty"):
        select_classes(("tumor",), [], "x")
    with pytest.raises(DataError, match="list of class names"):
        select_classes(("tumor",), "tumor", "x")


def test_folders_colliding_after_canonicalisation_are_named():
    with pytest.raises(DataError, match="'01_TUMOR' and 'tumor' are both class 'tumor'"):
        check_unique(["01_TUMOR", "tumor"], "class folders of 'root'")
