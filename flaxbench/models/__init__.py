"""Model registry: `spec.model.name` -> NNX module constructor.

Every model follows one contract:
- `Model(num_classes: int = 1000, *, rngs: nnx.Rngs, **options)` builds it;
- `model(images, train=False)` maps float NHWC images to logits (N, num_classes);
- `model.reset_head(num_classes, rngs=...)` swaps the classifier for a fresh one;
- `model.head_path` is the attribute path of the classifier (for freezing / lower backbone LR);
- `model.min_size` is the smallest image side the architecture supports.
Dropout-style layers draw from the `dropout` stream of the `rngs` given at construction.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

from flax import nnx

from flaxbench.errors import SpecError

# name -> (module, constructor). Lazy, so importing one family never imports the others.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "vit": ("flaxbench.models.vit", "ViT"),
    "convmodel": ("flaxbench.models.convmodel", "ConvModel"),
    **{f"resnet{d}": ("flaxbench.models.resnet", f"resnet{d}") for d in (18, 34, 50, 101, 152)},
    "alexnet": ("flaxbench.models.alexnet", "alexnet"),
    "googlenet": ("flaxbench.models.googlenet", "googlenet"),
    **{f"densenet{d}": ("flaxbench.models.densenet", f"densenet{d}") for d in (121, 161, 169, 201)},
    **{f"efficientnet_b{i}": ("flaxbench.models.efficientnet", f"efficientnet_b{i}") for i in range(8)},
}

# Constructor options that are probabilities (dropout rates), in whichever model takes them.
PROBABILITY_OPTIONS = ("dropout", "attention_dropout", "drop_rate", "stochastic_depth_prob")

# Architectures with torchvision weights: name -> module holding `load_torchvision_state`.
CONVERTERS: dict[str, str] = {
    name: module + "_convert"
    for name, (module, _) in ARCHITECTURES.items()
    if name not in ("vit", "convmodel")
}


def model_class(name: str) -> Any:
    """The constructor registered under `name`; a SpecError lists the known names."""
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise SpecError(f"unknown model name '{name}' in spec.model.name; known models: {known}")
    module, attr = ARCHITECTURES[name]
    return getattr(importlib.import_module(module), attr)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters of model `name`'s constructor (num_classes, rngs and its options), with defaults."""
    constructor = model_class(name)
    return dict(inspect.signature(constructor.__init__ if inspect.isclass(constructor) else constructor).parameters)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """SpecError for an unknown model, an option it lacks, a rate outside [0, 1] or a size below 1.

    Needs no data, so a run checks it before its tiles load.
    """
    parameters = model_parameters(name)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in options:
        if key in ("num_classes", "rngs") or not (key in parameters or takes_any):
            raise SpecError(f"model '{name}' has no option '{key}' (spec.model.options.{key}); remove it")
    for key in PROBABILITY_OPTIONS:
        value = options.get(key, 0.0)
        # 1 would drop every unit: nothing would reach the head. Stochastic depth rises to its rate over the
        # blocks (torchvision's EfficientNet), so 1 drops the last block alone.
        top = 1.0 if key == "stochastic_depth_prob" else math.nextafter(1.0, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top:
            raise SpecError(f"spec.model.options.{key}={value!r} is not a drop rate; use a value in "
                            f"{'[0, 1]' if top == 1.0 else '[0, 1)'}")
    # A size option is one whose default is a whole number or a tuple of them.
    for key, value in options.items():
        default = parameters[key].default if key in parameters else None
        if _is_whole(default):
            valid = _is_whole(value) and value >= 1
        elif isinstance(default, tuple) and default and all(map(_is_whole, default)):
            valid = isinstance(value, (tuple, list)) and bool(value) and all(_is_whole(v) and v >= 1 for v in value)
        else:
            continue
        if not valid:
            example = "a whole number" if _is_whole(default) else "whole numbers"
            raise SpecError(f"spec.model.options.{key}={value!r} must be {example} of at least 1, like {default!r}")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_model(name: str, num_classes: int, *, seed: int = 0, **options: Any) -> nnx.Module:
    """Build model `name` with `num_classes` outputs and random init from `seed`."""
    check_options(name, options)
    return model_class(name)(num_classes, rngs=nnx.Rngs(params=seed, dropout=seed + 1), **options)


def head_module(model: nnx.Module) -> nnx.Module:
    """The classifier layer at `model.head_path`."""
    node: Any = model
    for key in model.head_path:
        node = node[int(key)] if str(key).isdigit() else getattr(node, key)
    return node
