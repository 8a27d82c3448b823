"""The report's training settings: how each row was trained, read from its runs' spec.json, for a methods section."""

from __future__ import annotations

from typing import Any

from flaxbench.report.collect import RunGroup, is_number, saved_spec

# spec.train settings named in the table only where they are not at these values (off, or the plain choice).
OTHER_TRAIN_SETTINGS = {
    "label_smoothing": 0.0, "class_weights": None, "grad_clip_norm": None, "early_stopping_patience": None,
    "select_by": None, "freeze_backbone": False, "backbone_lr_scale": 1.0, "dtype": "auto",
}


def row_settings(group: RunGroup) -> dict[str, Any] | None:
    """The settings the row's runs share (their spec.json, as the report's grouping checked), or None without one."""
    spec = saved_spec(group.runs[0])
    if spec is None:
        return None
    data, model, train = (spec.get(part) if isinstance(spec.get(part), dict) else {}
                          for part in ("data", "model", "train"))
    return {
        "model": model.get("name"), "model_options": model.get("options") or {}, "init": model.get("init"),
        "image_size": data.get("image_size"), "normalize": data.get("normalize"),
        "stain_normalize": data.get("stain_normalize"), "split": data.get("split"),
        "split_seed": data.get("split_seed"), "group_by": data.get("group_by"), "cv_folds": data.get("cv_folds"),
        "augment": data.get("augment"),
        **{key: train.get(key) for key in ("epochs", "batch_size", "optimizer", "learning_rate", "schedule",
                                           "warmup_epochs", "weight_decay", "momentum")},
        "other": {key: train[key] for key, off in OTHER_TRAIN_SETTINGS.items() if key in train and train[key] != off},
        "seeds": sorted({run.seed for run in group.runs if run.seed is not None}),
    }


def _text(value: Any) -> str:
    """A setting as a table shows it: numbers short (1e-3 as 0.001), lists comma-separated, None as 'none'."""
    if value is None:
        return "none"
    if is_number(value):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_text, value))
    if isinstance(value, dict):  # a list inside keeps its brackets: channels=[8, 16, 16]
        return ", ".join(f"{key}=[{_text(item)}]" if isinstance(item, (list, tuple)) else f"{key}={_text(item)}"
                         for key, item in value.items())
    return str(value)


def _cells(settings: dict[str, Any]) -> list[str]:
    """The table cells after the name: model, tiles, split, training, augmentation, other settings, seeds."""
    options = settings["model_options"]
    model = _text(settings["model"]) + (f" ({_text(options)})" if options else "")
    size = settings["image_size"]
    tiles = f"{_text(size)} px" if size is not None else "native size"
    tiles += f", {_text(settings['normalize'])} normalisation"
    if settings["stain_normalize"]:
        tiles += f", {_text(settings['stain_normalize'])} stain normalisation"
    split = (f"{settings['cv_folds']}-fold CV" if settings["cv_folds"]
             else " / ".join(map(_text, settings["split"] or ())) or "none")
    split += f", split seed {_text(settings['split_seed'])}"
    if settings["group_by"]:
        split += f", grouped by `{settings['group_by']}`"
    training = (f"{_text(settings['epochs'])} epochs, batch {_text(settings['batch_size'])}, "
                f"{_text(settings['optimizer'])}"
                + (f" (momentum {_text(settings['momentum'])})" if settings["optimizer"] == "sgd" else "")
                + f", learning rate {_text(settings['learning_rate'])} ({_text(settings['schedule'])}, "
                f"{_text(settings['warmup_epochs'])}-epoch warmup), weight decay {_text(settings['weight_decay'])}")
    augment = _text(settings["augment"]) if settings["augment"] else "none"
    other = ", ".join(f"{key}={_text(value)}" for key, value in settings["other"].items()) or "—"
    return [model, tiles, split, training, augment, other, _text(settings["seeds"]) or "—"]


def settings_section(rows: list[dict[str, Any]], settings: list[dict[str, Any] | None]) -> list[str]:
    """Markdown lines of the training settings table, a line per row (in `rows` order)."""
    out = ["", "## How each row was trained", "",
           "From each row's spec.json (the settings its runs share): what a methods section states. Other "
           "settings: the spec.train keys not at their plain values (no label smoothing, class weights, "
           "clipping or early stopping; best epoch by validation accuracy; every layer trained at one rate; "
           "compute dtype by device).", "",
           "| Name | Model | Tiles | Split | Training | Augmentation | Other settings | Seeds |",
           "|" + "|".join("---" for _ in range(8)) + "|"]
    for row, entry in zip(rows, settings):
        cells = _cells(entry) if entry is not None else ["— (no spec.json beside its results.json)"] + ["—"] * 6
        out.append(f"| `{row['name']}` | " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return out
