"""Class names: canonical form of folder/label names and selection of the classes to use.

Matching is exact on the canonical form, nothing fuzzier: Unicode NFC (so a folder name
written decomposed, as macOS may, matches a composed request), lower case, surrounding blanks
removed, and a numeric prefix followed by a separator stripped ("01_TUMOR" -> "tumor",
"3 - Debris" -> "debris"). "TUM" does not match "tumor"; a name that is only digits stays as is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from data_pipeline.errors import DataError

_NUMERIC_PREFIX = re.compile(r"^\d+[\s_.\-]+(?=\S)")


def canonical_class_name(folder_name: str) -> str:
    """Lower-case, NFC-normalised `folder_name` with any numeric prefix ("01_", "3 - ") removed."""
    name = unicodedata.normalize("NFC", folder_name).strip().lower()
    return _NUMERIC_PREFIX.sub("", name, count=1)


def check_unique(raw_names: Sequence[str], where: str) -> tuple[str, ...]:
    """Canonical names of `raw_names`; DataError if two raw names collapse to one."""
    seen: dict[str, str] = {}
    for raw in raw_names:
        name = canonical_class_name(raw)
        if name in seen:
            raise DataError(
                f"{where}: '{seen[name]}' and '{raw}' are both class '{name}'; "
                "rename or remove one of them"
            )
        seen[name] = raw
    return tuple(seen)


def select_classes(
    available: Sequence[str], requested: Sequence[str] | None, where: str
) -> tuple[str, ...]:
    """The classes to use, in label order: `requested` (canonicalised) or all of `available`.

    `available` must already be canonical. A requested name that is missing or given twice
    raises a DataError listing what `where` offers.
    """
    if requested is None:
        return tuple(available)
    if isinstance(requested, str):
        raise DataError(
            f"spec.data.classes must be a list of class names or None, got the string '{requested}'"
        )
    chosen = check_unique([str(name) for name in requested], "spec.data.classes")
    if not chosen:
        raise DataError("spec.data.classes is empty; list class names or use None for all")
    for name in chosen:
        if name not in available:
            raise DataError(
                f"class '{name}' from spec.data.classes is not in {where}; "
                f"available classes: {', '.join(available)}"
            )
    return chosen
