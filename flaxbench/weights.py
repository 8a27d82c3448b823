"""torchvision ImageNet weights -> flaxbench NNX models.

`load_torchvision(arch, source)` reads a state_dict (a `.pth` path, a state_dict, or
'download' for torchvision's own download on a machine with internet) and copies it into the
matching NNX model through the family's `*_convert.py`, which maps names explicitly.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxbench.errors import WeightsError
from flaxbench.models import CONVERTERS, build_model, head_module

# Constructor options torchvision uses when it builds a model for its ImageNet weights.
PRETRAINED_OPTIONS: dict[str, dict[str, Any]] = {"googlenet": {"transform_input": True}}


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise WeightsError(
            "reading torchvision weights needs torch: pip install -e '.[torch]'"
        ) from e
    return torch


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch `.pth` file holding a state_dict into numpy arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file '{path}' does not exist; download the torchvision .pth first")
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if pickled:
            raise WeightsError(
                f"weights file '{path}' holds a pickled Python object ({pickled.group(1)}: e.g. a whole model "
                "saved with torch.save(model)), which flaxbench does not unpickle because unpickling can run code; "
                "if you trust the file, load it in torch and save model.state_dict() with torch.save"
            ) from None
        raise WeightsError(
            f"weights file '{path}' is not a readable torch file ({type(e).__name__}); "
            "it may be corrupt or truncated: download it again"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
        raise WeightsError(
            f"weights file '{path}' does not hold a state_dict (a mapping of names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    # nn.DataParallel and DistributedDataParallel save every name under 'module.'.
    if obj and all(str(key).startswith("module.") for key in obj):
        obj = {str(key).removeprefix("module."): value for key, value in obj.items()}
    return to_numpy(obj)


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state_dict of torch tensors (or arrays) as float32/int numpy arrays, same keys."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy().copy()
        out[str(key)] = np.asarray(value)
    return out


def download_state_dict(arch: str) -> dict[str, np.ndarray]:
    """torchvision's ImageNet weights for `arch`, downloaded by torchvision (needs internet)."""
    _torch()
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        state = weights.get_state_dict(progress=True)
    except Exception as e:
        raise WeightsError(
            f"could not download torchvision weights for {arch} ({type(e).__name__}: {e}); "
            "offline, download the .pth elsewhere and use spec.model.init='torchvision:FILE'"
        ) from None
    return to_numpy(state)


def build_for_loading(arch: str, num_classes: int, *, seed: int = 0, **options: Any) -> nnx.Module:
    """`arch` with zeros for weights and seeded dropout streams, for loading to overwrite.

    A random init compiles one kernel per distinct weight shape (about 12 s of CPU for a cold
    ResNet18); nnx.eval_shape runs the same constructor on shapes only.
    """
    model = nnx.eval_shape(lambda: build_model(arch, num_classes, seed=seed, **options))
    shapes = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    nnx.update(model, jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), shapes))
    nnx.reseed(model, dropout=seed + 1)
    return model


def load_torchvision(
    arch: str,
    source: str | os.PathLike | Mapping[str, Any],
    num_classes: int | None = None,
    *,
    seed: int = 0,
    **options: Any,
) -> nnx.Module:
    """Build `arch` with torchvision weights from `source`; a fresh head if num_classes differs from theirs.

    The weights' own class count (1000 for ImageNet, or that of a torchvision model fine-tuned
    elsewhere) is read from their classifier; `num_classes=None` keeps it.
    """
    if arch not in CONVERTERS:
        raise WeightsError(
            f"no torchvision conversion for '{arch}'; convertible: {', '.join(sorted(CONVERTERS))}"
        )
    if isinstance(source, Mapping):
        state_dict = to_numpy(source)
    elif source == "download":
        state_dict = download_state_dict(arch)
    else:
        state_dict = read_state_dict(source)
    converter = importlib.import_module(CONVERTERS[arch])
    head = state_dict.get(f"{converter.TORCH_HEAD}.weight")
    trained_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    model = build_for_loading(arch, trained_classes, seed=seed, **{**PRETRAINED_OPTIONS.get(arch, {}), **options})
    try:
        converter.load_torchvision_state(model, state_dict)
    except WeightsError as error:
        if isinstance(source, Mapping):
            raise
        where = "torchvision's download" if source == "download" else f"'{os.fspath(source)}'"
        raise WeightsError(f"weights {where}: {error}") from None
    if num_classes is not None and num_classes != trained_classes:
        model.reset_head(num_classes, rngs=nnx.Rngs(params=seed + 2))
    return model


def save_converted(model: nnx.Module, arch: str, out_dir: str | os.PathLike, source: str) -> None:
    """Write a converted model as an orbax checkpoint that `checkpoint:DIR` inits read."""
    from flaxbench.checkpoints import save_model
    from flaxbench.train.state import split_model

    parts = split_model(model)
    num_classes = int(head_module(model).out_features)
    meta = {"arch": arch, "num_classes": num_classes, "source": str(source), "format": "flaxbench.model/1"}
    save_model(out_dir, parts.params, parts.model_state, meta)


def load_converted(arch: str, directory: str | os.PathLike, num_classes: int, *, seed: int = 0, **options: Any) -> nnx.Module:
    """Build `arch` from a `flaxbench convert` checkpoint; a fresh head if the class count differs."""
    from flaxbench.checkpoints import load_model, read_model_meta
    from flaxbench.train.state import split_model

    meta = read_model_meta(directory)
    if meta.get("arch") != arch:
        raise WeightsError(
            f"checkpoint '{directory}' holds {meta.get('arch')!r}, but spec.model.name is '{arch}'"
        )
    model = build_for_loading(arch, int(meta["num_classes"]), seed=seed, **{**PRETRAINED_OPTIONS.get(arch, {}), **options})
    parts = split_model(model)
    params, model_state, _ = load_model(directory, parts.params, parts.model_state)
    nnx.update(model, params, model_state)
    if num_classes != int(meta["num_classes"]):
        model.reset_head(num_classes, rngs=nnx.Rngs(params=seed + 2))
    return model

