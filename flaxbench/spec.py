"""Loading, overriding, checking and saving specs (ml-collections ConfigDicts)."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
from ml_collections import config_dict

from flaxbench.errors import SpecError

# Sections and keys every spec must have (specs/common.py defines them all).
REQUIRED_KEYS = ("name", "seed", "data.source", "model.name", "train.epochs", "train.batch_size")
# The spec every spec file's keys are those of; its sections hold fixed keys, but for the model's options.
COMMON_SPEC = Path(__file__).resolve().parent.parent / "specs" / "common.py"
FREE_SECTIONS = ("model.options",)


def load_spec_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Import a spec file and return its `get_config()`, named after the file if unnamed; or a run's spec.json."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist; see specs/ for the study specs")
    if path.suffix == ".json":
        return _load_saved_spec(path)
    if path.suffix != ".py":
        raise SpecError(f"spec file '{path}' is neither a Python spec (.py with get_config()) nor a run's spec.json")
    module_spec = importlib.util.spec_from_file_location(f"flaxbench_spec_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise SpecError(f"spec file '{path}' failed to import: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise SpecError(f"spec file '{path}' has no get_config() function")
    try:
        config = module.get_config()
    except Exception as e:
        raise SpecError(f"get_config() in spec file '{path}' failed: {type(e).__name__}: {e}") from None
    config = finalize(config, path)
    if COMMON_SPEC.is_file() and path.resolve() != COMMON_SPEC:
        conform_to(config, load_spec_file(COMMON_SPEC), path)
    return config


def _load_saved_spec(path: Path) -> ml_collections.ConfigDict:
    """A run's spec.json as a spec to run again (its lists back to the tuples specs/common.py holds)."""
    try:
        config = from_json(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"'{path}' is not a spec.json a run wrote ({type(e).__name__}: {e})") from None
    if COMMON_SPEC.is_file():
        conform_to(config, load_spec_file(COMMON_SPEC), path)
    return finalize(config, path)


def _leaf_keys(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every key of `config` as a dotted path -> value, sections opened but for FREE_SECTIONS."""
    keys = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, Mapping)) and dotted not in FREE_SECTIONS:
            keys.update(_leaf_keys(value, f"{dotted}."))
        else:
            keys[dotted] = value
    return keys


def conform_to(config: ml_collections.ConfigDict, common: ml_collections.ConfigDict, path: str | os.PathLike) -> None:
    """SpecError for a key of `config` that `common` lacks (a typo) or one it lacks of `common`'s. A whole number
    where `common` holds a float becomes that float, and a list (JSON's) where it holds a tuple that tuple, so that
    overrides may give what `common` takes."""
    ours, theirs = _leaf_keys(config), _leaf_keys(common)
    for key in ours:
        if key not in theirs:
            section, _, leaf = key.rpartition(".")
            near = [k.rpartition(".")[2] for k in theirs if k.rpartition(".")[0] == section]
            close = difflib.get_close_matches(leaf, near, n=1)
            hint = f"did you mean '{section + '.' if section else ''}{close[0]}'? " if close else ""
            raise SpecError(f"spec '{path}' has key '{key}', which flaxbench does not know; {hint}"
                            "the keys are those of specs/common.py")
    missing = [key for key in theirs if key not in ours]
    if missing:
        raise SpecError(
            f"spec '{path}' lacks {len(missing)} key{'s' if len(missing) > 1 else ''} of specs/common.py "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); build it on common's, as the specs "
            "in specs/ do: c = common.get_config()"
        )
    for key, value in ours.items():
        like = theirs[key]
        parent_path, _, leaf = key.rpartition(".")
        parent = get_path(config, parent_path) if parent_path else config
        if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(like, tuple) and isinstance(value, list):
            value = tuple(value)
        elif value is None and like is None and _untyped(parent, leaf):  # a plain None where common has a type
            typed = get_path(common, parent_path) if parent_path else common
            value = config_dict.placeholder(typed.get_ref(leaf).get_type())
        else:
            continue
        with config.unlocked():  # a field keeps its first type: replaced, not assigned
            del parent[leaf]
            parent[leaf] = value


def _untyped(parent: ml_collections.ConfigDict, leaf: str) -> bool:
    """Whether `parent.leaf` is a plain None, which takes any type (a placeholder has one)."""
    try:
        parent.get_ref(leaf)
    except ValueError:  # ml_collections makes no reference to an untyped None
        return True
    return False


def finalize(config: ml_collections.ConfigDict, path: str | os.PathLike | None) -> ml_collections.ConfigDict:
    """Fill the spec name from the file name and check that the required keys are there."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise SpecError(f"get_config() in '{path}' must return an ml_collections.ConfigDict")
    with config.unlocked():
        if not config.get("name") and path is not None:
            config.name = Path(path).stem
    for key in REQUIRED_KEYS:
        try:
            get_path(config, key)
        except SpecError:
            raise SpecError(f"spec '{path}' lacks key '{key}'; start from specs/common.py") from None
    return config


def get_path(config: ml_collections.ConfigDict, dotted: str) -> Any:
    """Value at `a.b.c`; SpecError naming the key when it does not exist."""
    node: Any = config
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(node, (ml_collections.ConfigDict, Mapping)) or part not in node:
            where = ".".join(dotted.split(".")[:i]) or "the spec"
            raise SpecError(f"unknown spec key 'spec.{dotted}': '{part}' is not a key of {where}")
        node = node[part]
    return node


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, str):  # a string key takes the text as it is ('None' clears it)
        return None if text == "None" else text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(config: ml_collections.ConfigDict, items: Iterable[str]) -> dict[str, Any]:
    """`['train.epochs=3', 'data.classes=None']` as `{'train.epochs': 3, 'data.classes': None}`.

    Values are Python literals, except for keys that hold a string, which take the text as is.
    """
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"spec override '{item}' must look like key=value")
        dotted = key.removeprefix("spec.").removeprefix("--spec.")
        pairs[dotted] = _parse_value(value, get_path(config, dotted))
    return pairs


# What a key takes besides values of its default's type, for the error on a value it cannot take.
OTHER_VALUES = {
    "data.classes": "None for every class of the source",
    "data.split": "the names of a source's own splits, e.g. \"('train', 0.15, 'test')\"",
}


KIND_WORDS = {int: "a whole number", float: "a number", str: "a string"}  # a placeholder's type, as a hint says it


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | Iterable[str]) -> None:
    """Apply `{'train.epochs': 3}` or `['train.epochs=3']` overrides in place, type-checked (a dict given for a
    section sets its keys; for spec.model.options it is the options)."""
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(config, overrides)
    for dotted, value in overrides.items():
        current = get_path(config, dotted)  # raises on a misspelled key
        if isinstance(current, ml_collections.ConfigDict) and isinstance(value, Mapping) and (
                dotted not in FREE_SECTIONS):  # a dict for a section of fixed keys sets those keys
            apply_overrides(config, {f"{dotted}.{key}": item for key, item in value.items()})
            continue
        parent_path, _, leaf = dotted.rpartition(".")
        parent = get_path(config, parent_path) if parent_path else config
        try:
            parent[leaf] = value
        except TypeError as e:
            current = parent[leaf]
            if current is None:  # a typed placeholder (config_dict.placeholder): no value to show, but its type
                kind = parent.get_ref(leaf).get_type()
                hint = f"it takes {KIND_WORDS.get(kind, kind.__name__)} or None" if kind is not None else str(e)
            elif isinstance(current, ml_collections.ConfigDict):  # a section: its keys are set one by one
                example = next(iter(current.keys()), "KEY")
                hint = (f"it is a section; set its keys, e.g. --spec.{dotted}.{example}=VALUE, or give a dict: "
                        f"--spec.{dotted}=\"{{'{example}': VALUE}}\"")
            elif isinstance(current, (tuple, list, dict)):
                hint = f"it takes a {type(current).__name__}, written as Python does: --spec.{dotted}=\"{current!r}\""
            else:
                hint = f"it takes values like {current!r}"
            extra = f", or {OTHER_VALUES[dotted]}" if dotted in OTHER_VALUES else ""
            raise SpecError(f"spec key 'spec.{dotted}' cannot take {value!r}: {hint}{extra}") from None


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved spec as JSON (tuples become lists)."""
    return config.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    """A spec saved by `to_json` back as a ConfigDict."""
    return ml_collections.ConfigDict(json.loads(text))
