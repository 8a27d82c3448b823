"""Starting weights for flaxbench NNX models: torchvision's, converted ones, or a run's own.

`load_torchvision(arch, source)` reads a state_dict (a `.pth` path, a state_dict, or
'download' for torchvision's own download on a machine with internet) and copies it into the
matching NNX model through the family's `*_convert.py`, which maps names explicitly.
`load_converted` reads what `flaxbench convert` wrote; `load_from_run` a run's checkpoint, to
fine-tune it on other tiles.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from flaxbench.checkpoints import BEST, LAST
from flaxbench.errors import FlaxbenchError, WeightsError
from flaxbench.models import CONVERTERS, PROBABILITY_OPTIONS, build_model, head_module, model_parameters

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


def _load_lazily(torch: Any, path: str) -> Any:
    """torch.load with its tensors mapped from the file, read only as they are used; files in torch's old format
    (before 1.6) cannot be mapped and load whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | os.PathLike, only: str | None = None) -> dict[str, np.ndarray]:
    """Read a torch `.pth` file holding a state_dict into numpy arrays (`only`: just that key, if it is there)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f"weights file '{path}' is a folder; give the torchvision .pth file in it")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file '{path}' does not exist; download the torchvision .pth first")
    torch = _torch()
    try:
        obj = _load_lazily(torch, path) if only is not None else torch.load(path, map_location="cpu",
                                                                             weights_only=True)
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
    return to_numpy(obj if only is None else {key: value for key, value in obj.items() if key == only})


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state_dict of torch tensors (or arrays) as numpy arrays of their dtypes (bfloat16 widened to float32)."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: widened exactly to float32
                value = value.float()
            value = value.numpy().copy()
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
    ResNet18); nnx.eval_shape runs the same constructor on shapes only. The zeros are copied
    from the host: `jnp.asarray` or `jnp.zeros` would compile a small program per shape too.
    """
    model = nnx.eval_shape(lambda: build_model(arch, num_classes, seed=seed, **options))
    shapes = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    nnx.update(model, jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), shapes))
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
    head = state_dict.get(_torch_head_key(arch))
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

    check_weights_source(f"checkpoint:{os.fspath(directory)}", arch)
    meta = read_model_meta(directory)
    model = build_for_loading(arch, int(meta["num_classes"]), seed=seed, **{**PRETRAINED_OPTIONS.get(arch, {}), **options})
    parts = split_model(model)
    params, model_state, _ = load_model(directory, parts.params, parts.model_state)
    nnx.update(model, params, model_state)
    if num_classes != int(meta["num_classes"]):
        model.reset_head(num_classes, rngs=nnx.Rngs(params=seed + 2))
    return model


def run_checkpoint(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(run directory, 'best' or 'last') if `path` is a flaxbench run or its checkpoint folder, else None.

    A run directory means its best checkpoint; `RUN/checkpoints/last` its last one.
    """
    path = Path(path)
    if (path / "spec.json").is_file():
        return path, BEST
    if path.name == "checkpoints" and (path.parent / "spec.json").is_file():
        return path.parent, BEST
    if path.name in (BEST, LAST) and path.parent.name == "checkpoints" and (path.parent.parent / "spec.json").is_file():
        return path.parent.parent, path.name
    return None


def _torch_head_key(arch: str) -> str:
    """The state_dict key of the classifier's weight in torchvision's `arch`, e.g. 'fc.weight'."""
    return f"{importlib.import_module(CONVERTERS[arch]).TORCH_HEAD}.weight"


def check_weights_source(init: str, arch: str) -> None:
    """WeightsError where the weights spec.model.init names cannot serve `arch`, found from their metadata or
    classifier alone (a torch file mapped, not read): so that a run fails before its tiles load, not after."""
    path = init.partition(":")[2]
    if init.startswith("torchvision:") and arch in CONVERTERS:
        head = _torch_head_key(arch)
        if head not in read_state_dict(path, only=head):
            raise WeightsError(f"weights file '{path}' has no '{head}', the classifier of torchvision's {arch}: "
                               f"is it {arch}'s state_dict? (spec.model.name names the model)")
    elif init.startswith("checkpoint:"):
        from flaxbench.checkpoints import read_model_meta
        from flaxbench.workdir import fold_run_dirs

        found = run_checkpoint(path)
        if found:
            trained = json.loads((found[0] / "spec.json").read_text())["model"]["name"]
            if trained != arch:
                raise WeightsError(f"run '{found[0]}' trained {trained!r}, but spec.model.name is '{arch}'")
        elif folds := fold_run_dirs(Path(path)):
            raise WeightsError(f"'{path}' is a cross-validated row's folder; start from one of its runs, e.g. "
                               f"spec.model.init=checkpoint:{folds[0]}")
        elif (held := read_model_meta(path).get("arch")) != arch:
            raise WeightsError(f"checkpoint '{path}' holds {held!r}, but spec.model.name is '{arch}'")


INIT_PLACEHOLDER = "{init}"  # in spec.title: replaced by init_in_words(spec.model.init)


def init_in_words(init: str, arch: str) -> str:
    """spec.model.init as a title says it: 'from scratch', 'ImageNet', 'from run NAME', or 'weights of an N-class
    model' for torchvision weights whose head is not ImageNet's 1000 classes (trained elsewhere, e.g. on tiles)."""
    if init == "scratch":
        return "from scratch"
    classes = None
    if init.startswith("checkpoint:"):
        found = run_checkpoint(init.removeprefix("checkpoint:"))
        if found:
            return f"from run {found[0].resolve().name}"
        from flaxbench.checkpoints import read_model_meta

        try:
            classes = read_model_meta(init.removeprefix("checkpoint:")).get("num_classes")
        except (FlaxbenchError, OSError):  # gone since (a resumed run needs no initial weights)
            pass
    elif init.startswith("torchvision:") and arch in CONVERTERS:
        head = _torch_head_key(arch)
        try:
            found = read_state_dict(init.removeprefix("torchvision:"), only=head)
            classes = found[head].shape[0] if head in found else None
        except (FlaxbenchError, OSError):
            pass
    # torchvision's own classification weights ('imagenet', and files or conversions of them) are ImageNet's
    return "ImageNet" if classes in (None, 1000) else f"weights of a {classes}-class model"


def load_from_run(
    arch: str, path: str | os.PathLike, classes: Sequence[str], *, seed: int = 0, **options: Any
) -> nnx.Module:
    """Build `arch` from a flaxbench run's checkpoint, to fine-tune it; its head is kept for the same classes only."""
    from flaxbench.checkpoints import read_run_weights

    check_weights_source(f"checkpoint:{os.fspath(path)}", arch)
    run_dir, which = run_checkpoint(path)
    trained = json.loads((run_dir / "spec.json").read_text())["model"]
    data_file = run_dir / "data.json"
    if not data_file.is_file():
        raise WeightsError(f"run '{run_dir}' has no data.json: it stopped before training; train it first")
    data = json.loads(data_file.read_text())
    _check_same_options(arch, trained, options, run_dir)
    params, model_state, epoch = read_run_weights(run_dir / "checkpoints", which)
    model = build_for_loading(arch, len(data["classes"]), seed=seed, **options)
    hint = (f"it was trained with spec.model.options={trained.get('options') or {}} on "
            f"{data['image_size'][0]} px tiles: use the same options and spec.data.image_size")
    if hasattr(model, "fit_checkpoint"):  # e.g. a ViT tuned on tiles of another size
        params = model.fit_checkpoint(params)
    _fill(model, params, model_state, f"run '{run_dir}' ({which} checkpoint, epoch {epoch})", hint)
    if list(classes) != list(data["classes"]):
        model.reset_head(len(classes), rngs=nnx.Rngs(params=seed + 2))
    return model


# Options a fine-tuned model may change: regularisation, and a ViT's tile size (its position embeddings resample).
TUNABLE_OPTIONS = (*PROBABILITY_OPTIONS, "image_size")


def _check_same_options(arch: str, trained: Mapping[str, Any], options: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse to fine-tune a run as a model of other options (a ViT's heads, GoogLeNet's input transform) but for
    TUNABLE_OPTIONS: weights of the same shapes would load into another model without an error."""
    defaults = {key: p.default for key, p in model_parameters(arch).items()
                if p.default is not inspect.Parameter.empty and key not in ("num_classes", "rngs", "seed")}
    # Every init but 'scratch' adds PRETRAINED_OPTIONS, so the trained run's value follows from its spec.
    used = {**(PRETRAINED_OPTIONS.get(arch, {}) if trained.get("init") != "scratch" else {}), **(trained.get("options") or {})}
    for key, default in defaults.items():
        then, now = used.get(key, default), options.get(key, default)
        if key not in TUNABLE_OPTIONS and _as_json(then) != _as_json(now):
            raise WeightsError(
                f"run '{run_dir}' trained {arch} with {key}={then!r}, this spec has {now!r}; set "
                f"spec.model.options.{key}={then!r} to fine-tune the model it trained"
            )


def _as_json(value: Any) -> Any:
    """`value` as spec.json holds it (tuples as lists), to compare a spec's option with a saved one."""
    return json.loads(json.dumps(value, default=str))


def _fill(model: nnx.Module, params: dict[str, Any], model_state: dict[str, Any], where: str, hint: str) -> None:
    """Copy flat-named arrays into `model`, refusing any name or shape it does not have."""
    from flaxbench.train.state import flat_arrays, split_model, unflat_arrays

    parts = split_model(model)
    for template, saved in ((parts.params, params), (parts.model_state, model_state)):
        expected = {name: tuple(leaf.shape) for name, leaf in flat_arrays(template).items()}
        for name in sorted(expected.keys() | saved.keys()):
            if name not in saved:
                raise WeightsError(f"{where} has no '{name}'; {hint}")
            if name not in expected:
                raise WeightsError(f"{where} holds '{name}', which this model does not have; {hint}")
            if tuple(saved[name].shape) != expected[name]:
                raise WeightsError(
                    f"{where}: '{name}' has shape {tuple(saved[name].shape)}, this model {expected[name]}; {hint}"
                )
    nnx.update(model, unflat_arrays(parts.params, params), unflat_arrays(parts.model_state, model_state))
