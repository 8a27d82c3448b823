"""Everything a run needs before its first step: data on device, model, optimizer, compiled fns."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from data_pipeline import SPLIT_NAMES, Split, TileDataset, augment_ops, eval_batch_indices, load_dataset
from flaxbench.compile_cache import CacheLookups
from flaxbench.errors import SpecError
from flaxbench.models import build_model, check_options, model_class, model_parameters
from flaxbench.models.forms import plain_forms
from flaxbench.runtime import batch_sharding, global_mesh, make_mesh, replicated, to_device, to_host
from flaxbench.train.class_weights import check_class_weights, class_weights
from flaxbench.train.optim import make_optimizer
from flaxbench.train.spec_checks import (
    check_init, check_min_size, check_run_settings, check_select_by, check_train_numbers,
)
from flaxbench.train.state import ModelParts, TrainState, split_model
from flaxbench.train.host_feed import (
    HostFedEpoch, check_placement, choose_placement, host_fed_logits, log_placement,
)
from flaxbench.train.steps import (
    SteppedEpoch, epoch_plan, make_batch_predict, make_batch_train_step, make_predict, make_train_epoch,
    make_train_step,
)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TRAIN_EVAL = "train_eval"  # the predict program over the training split ("train" is the epoch)
TTA_SUFFIX = "+tta"  # a predict program's name with test-time augmentation


def _model_options(spec: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
    options = dict(spec.model.options.to_dict()) if spec.model.options else {}
    accepts = model_parameters(spec.model.name)
    if "image_size" in accepts and "image_size" not in options:
        options["image_size"] = image_size
    return options


def check_model_builds(spec: ml_collections.ConfigDict, image_size: int | None) -> None:
    """SpecError if the model refuses spec.model.options, or was set for tiles of another size than `image_size`.

    Built on shapes only (nnx.eval_shape: nothing drawn or compiled), so a run checks it before its
    tiles load where spec.data.image_size gives their size (None: the options alone).
    """
    options = dict(spec.model.options.to_dict()) if spec.model.options else {}
    if image_size is not None:
        _check_tile_size_option(spec, image_size)
        check_min_size(spec, getattr(model_class(spec.model.name), "min_size", 1), image_size)
        options = _model_options(spec, image_size)
    try:
        nnx.eval_shape(lambda: build_model(spec.model.name, 2, **options))
    except (ValueError, TypeError, ArithmeticError) as error:
        raise SpecError(f"spec.model.options: {spec.model.name} cannot be built with {options}: {error}") from None


def _check_tile_size_option(spec: ml_collections.ConfigDict, image_size: int) -> None:
    """SpecError if spec.model.options.image_size (ConvModel's, a ViT's) is not the tiles' size."""
    fixed = (spec.model.options or {}).get("image_size")
    if fixed is not None and fixed != image_size:
        raise SpecError(f"spec.model.options.image_size={fixed!r} but the tiles are {image_size} px "
                        "(spec.data.image_size); set the two equal")


def init_model(
    spec: ml_collections.ConfigDict, classes: Sequence[str], image_size: int, *, load_weights: bool = True
) -> nnx.Module:
    """The spec's model for `classes`: random init, torchvision weights, a converted checkpoint or a run's.

    `load_weights=False` builds the same architecture with zeros for weights, neither read nor
    drawn, for restoring a run's own checkpoint into (a random init of the larger models compiles
    one kernel per weight shape: 7-21 s of CPU).
    """
    from flaxbench import weights  # torch is only needed for torchvision inits

    name, init = spec.model.name, spec.model.init
    num_classes = len(classes)
    options = _model_options(spec, image_size)
    if init != "scratch":
        options = {**weights.PRETRAINED_OPTIONS.get(name, {}), **options}
    if not load_weights:
        return weights.build_for_loading(name, num_classes, seed=spec.seed, **options)
    if init == "scratch":
        return build_model(name, num_classes, seed=spec.seed, **options)
    check_init(init)
    if init == "imagenet":
        return weights.load_torchvision(name, "download", num_classes, seed=spec.seed, **options)
    if init.startswith("torchvision:"):
        path = init.removeprefix("torchvision:")
        return weights.load_torchvision(name, path, num_classes, seed=spec.seed, **options)
    path = init.removeprefix("checkpoint:")
    if weights.run_checkpoint(path):
        return weights.load_from_run(name, path, classes, seed=spec.seed, **options)
    return weights.load_converted(name, path, num_classes, seed=spec.seed, **options)


def resolve_dtype(name: str, platform: str) -> str:
    """'auto' is bfloat16 on accelerators and float32 on CPU; other names are checked."""
    if name == "auto":
        return "float32" if platform == "cpu" else "bfloat16"
    if name not in COMPUTE_DTYPES:
        raise SpecError(f"spec.train.dtype '{name}' is unknown; use 'auto', 'float32' or 'bfloat16'")
    return name


def scan_epochs(epoch_loop: str, mesh: jax.sharding.Mesh) -> bool:
    """Whether a whole epoch runs in one lax.scan ('scan'), step by step ('steps'), or by device ('auto')."""
    if epoch_loop == "auto":
        return mesh.devices.flat[0].platform != "cpu"
    if epoch_loop in ("scan", "steps"):
        return epoch_loop == "scan"
    raise SpecError(f"spec.train.epoch_loop '{epoch_loop}' is unknown; use 'auto', 'scan' or 'steps'")


@dataclasses.dataclass
class DeviceSplit:
    """One split with its padded evaluation batches: on device, or in host memory (numpy) when fed from there."""

    images: jax.Array | np.ndarray | None  # None: not decoded (build_run's `decode`)
    labels: np.ndarray
    ids: tuple[str, ...]
    batch_indices: jax.Array | np.ndarray | None
    count: int


def put_split(
    split: Split, eval_batch_size: int, sharding: jax.sharding.Sharding, *, on_device: bool = True
) -> DeviceSplit:
    """Copy a split's uint8 images to the device once (`on_device`), or keep them on the host."""
    if split.images is None:
        return DeviceSplit(None, np.asarray(split.labels), tuple(split.ids), None, len(split.labels))
    idx, _ = eval_batch_indices(len(split.labels), eval_batch_size)
    place = (lambda array: to_device(array, sharding)) if on_device else np.asarray
    return DeviceSplit(
        place(split.images), np.asarray(split.labels), tuple(split.ids), place(np.asarray(idx)), len(split.labels),
    )


@dataclasses.dataclass
class Run:
    """A run's data, model parts, optimizer and (compiled) step functions."""

    spec: ml_collections.ConfigDict
    dataset: TileDataset
    mesh: Any
    parts: ModelParts
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    train_step: Any
    scan_epochs: bool
    predict: Any
    splits: dict[str, DeviceSplit]
    train_labels: jax.Array
    steps_per_epoch: int
    head_path: tuple[str, ...]
    dtype_name: str
    class_weights: np.ndarray | None = None  # of the training loss (spec.train.class_weights)
    predict_tta: Any = None  # `predict` averaged over the 8 flips and rotations of each tile
    # "device": every split copied to every device; "host": batches sent from host memory (host_feed.py),
    # where train_step and predict take one batch instead of a split and its indices
    placement: str = "device"
    data_load_time_s: float | None = None  # seconds build_run spent loading the tiles; None if it was given them
    compiled: dict[str, Any] = dataclasses.field(default_factory=dict)
    compile_time_s: float = 0.0
    # programs loaded from the persistent compilation cache (compile_cache.py) and compiled, over all compiles
    compile_cache_hits: int = 0
    compile_cache_misses: int = 0

    def initial_state(self) -> TrainState:
        """Fresh optimizer state over the initial params, all replicated over the data mesh."""
        params = self.parts.params
        # jitted: eagerly, optax's zeros compile one small program per parameter shape (2.2 s for GoogLeNet)
        state = TrainState(params, self.parts.model_state, jax.jit(self.tx.init)(params))
        # Placed on the whole mesh, not left on the default device: checkpoints restore into this
        # template's shardings, and a multi-process jit rejects arrays on one device.
        sharding = replicated(self.mesh)
        return jax.tree.map(lambda leaf: to_device(np.asarray(leaf), sharding), state)

    def compile(self, names: tuple[str, ...], state: TrainState) -> None:
        """Lower and compile the named functions ('train', 'val', 'test', ...), timed apart."""
        start = time.perf_counter()
        with CacheLookups() as lookups:
            self._compile_each(names, state)
        self.compile_time_s += time.perf_counter() - start
        self.compile_cache_hits += lookups.hits
        self.compile_cache_misses += lookups.misses

    def _compile_each(self, names: tuple[str, ...], state: TrainState) -> None:
        for name in names:
            if name in self.compiled:
                continue
            # traced under the mesh, so that the CPU layers' batch loops run per device (local_batch.py);
            # one device: no mesh, the program as it was measured
            with jax.set_mesh(self.mesh) if self.mesh.devices.size > 1 else contextlib.nullcontext():
                if name == "train":
                    self.compiled[name] = self._compile_train(state)
                else:
                    split_name = name.removesuffix(TTA_SUFFIX)
                    split = self.splits["train" if split_name == TRAIN_EVAL else split_name]
                    args = (state.params, state.model_state, *self.predict_inputs(split))
                    predict = self.predict_tta if name.endswith(TTA_SUFFIX) else self.predict
                    self.compiled[name] = jax.jit(predict).lower(*args).compile()

    def _compile_train(self, state: TrainState) -> Any:
        """The epoch function: one scanned program, or a step loop (see `scan_epochs`)."""
        images, labels, key = self.splits["train"].images, self.train_labels, jax.random.key(0)
        batch = self.spec.train.batch_size
        n = images.shape[0]
        if self.placement == "host":
            plan = jax.jit(lambda k: epoch_plan(k, n, batch)).lower(key).compile()
            keys = plan(key)[1]
            args = (self.batch_struct(images, batch), self.batch_struct(labels, batch), keys[0])
            step = jax.jit(self.train_step, donate_argnums=(0,)).lower(state, *args).compile()
            return HostFedEpoch(plan, step, self.mesh)
        if self.scan_epochs:
            epoch = make_train_epoch(self.train_step, batch)
            return jax.jit(epoch, donate_argnums=(0,)).lower(state, images, labels, key).compile()
        plan = jax.jit(lambda k: epoch_plan(k, n, batch)).lower(key).compile()
        idx, keys = plan(key)
        step = jax.jit(self.train_step, donate_argnums=(0,)).lower(state, images, labels, idx[0], keys[0]).compile()
        return SteppedEpoch(plan, step)

    def logits(self, name: str, state: TrainState, *, tta: bool = False) -> np.ndarray:
        """Logits of every example of split `name`, in split order, on the host (`tta`: see make_predict)."""
        split = self.splits[name]
        program = (TRAIN_EVAL if name == "train" else name) + (TTA_SUFFIX if tta else "")
        self.compile((program,), state)
        if self.placement == "host":
            outputs = host_fed_logits(self.compiled[program], state.params, state.model_state, split.images,
                                      split.batch_indices, self.mesh)
            return np.concatenate([to_host(out) for out in outputs])[: split.count]
        out = self.compiled[program](state.params, state.model_state, split.images, split.batch_indices)
        return to_host(out)[: split.count]

    def predict_inputs(self, split: DeviceSplit) -> tuple[Any, ...]:
        """What `predict` takes after params and model state to run over `split`."""
        if self.placement == "host":  # one batch, described: the host sends the real ones
            return (self.batch_struct(split.images, split.batch_indices.shape[1]),)
        return split.images, split.batch_indices

    def batch_struct(self, array: np.ndarray | jax.Array, batch: int) -> jax.ShapeDtypeStruct:
        """The shape, dtype and sharding of a batch of `array`'s rows, split over the data mesh."""
        return jax.ShapeDtypeStruct((batch, *array.shape[1:]), array.dtype, sharding=batch_sharding(self.mesh))


def _check_val_and_test(spec: ml_collections.ConfigDict, counts: Sequence[int]) -> None:
    """SpecError if the split leaves no val or no test tiles (`counts`: train, val and test tiles)."""
    for name, count in zip(SPLIT_NAMES[1:], counts[1:]):
        if not count:
            raise SpecError(
                f"spec.data.split={tuple(spec.data.split)} leaves no {name} tiles; training needs val tiles "
                f"(to pick the best epoch) and test tiles (for the results): give both a share"
            )


def build_run(
    spec: ml_collections.ConfigDict, dataset: TileDataset | None = None, *, load_weights: bool = True,
    decode: Collection[str] = SPLIT_NAMES, listed: Callable | None = None, train: bool = True,
) -> Run:
    """Load the data, build the model and optimizer, and put the data on device.

    Only the splits in `decode` need be decoded; `listed` may refuse the splits first (`load_dataset`).
    `train=False` (evaluation only) splits batches over every device, whatever the run trained on."""
    cfg = spec.train
    check_run_settings(spec)
    check_train_numbers(cfg)
    # The training batch must divide over spec.mesh.data devices; evaluation's batches are padded to fit.
    mesh = make_mesh(spec.mesh, cfg.batch_size) if train else global_mesh()
    dtype_name = resolve_dtype(cfg.dtype, mesh.devices.flat[0].platform)
    # What can be checked without the tiles is checked before they load (minutes for a large folder).
    scan = scan_epochs(cfg.epoch_loop, mesh)
    make_optimizer(cfg, 1, ())  # an unknown optimizer or schedule
    check_options(spec.model.name, dict(spec.model.options or {}))
    if train:  # (a run's saved options built when it trained; 0.4-2 s for the larger models on CPU)
        check_model_builds(spec, spec.data.get("image_size"))
    check_class_weights(cfg.get("class_weights"))
    requested_placement = check_placement(cfg.get("data_placement"))
    check_select_by(cfg.get("select_by"))
    if load_weights:
        check_init(spec.model.init, spec.model.name)
    data_load_time_s = None  # given the tiles, loaded before (a study's rows)
    if dataset is None:
        def listed_then_checked(source: str, classes: Sequence[str], splits: Sequence[Any]) -> None:
            _check_val_and_test(spec, [len(split.ids) for split in splits])
            if listed is not None:
                listed(source, classes, splits)

        load_start = time.perf_counter()
        dataset = load_dataset(spec.data, decode, listed_then_checked)
        data_load_time_s = time.perf_counter() - load_start
    n_train = len(dataset.train.labels)
    height, width = dataset.image_size
    if height != width:
        raise SpecError(
            f"the tiles are {height}x{width} px and the models take square tiles; set spec.data.image_size "
            "to the side to resize them to"
        )
    _check_val_and_test(spec, [len(dataset.train.labels), len(dataset.val.labels), len(dataset.test.labels)])
    if n_train < cfg.batch_size:
        raise SpecError(
            f"spec.train.batch_size={cfg.batch_size} exceeds the {n_train} training tiles; lower it"
        )
    # Model classes say their minimum tile size (ConvModel cannot even be built below it); the
    # torchvision ports are built by functions, so their instances are checked. Both before a
    # workdir is cleared, not when the first step is traced.
    _check_tile_size_option(spec, height)
    check_min_size(spec, getattr(model_class(spec.model.name), "min_size", 1), height)
    model = init_model(spec, dataset.classes, dataset.image_size[0], load_weights=load_weights)
    check_min_size(spec, model.min_size, height)
    parts = split_model(model)
    steps_per_epoch = n_train // cfg.batch_size
    tx, schedule = make_optimizer(cfg, steps_per_epoch, tuple(model.head_path))
    sharding = replicated(mesh)
    decoded = [getattr(dataset, name).images for name in SPLIT_NAMES if getattr(dataset, name).images is not None]
    placement, reason = choose_placement(requested_placement, decoded, mesh)
    if placement == "host" and cfg.epoch_loop == "scan":
        raise SpecError(
            "spec.train.epoch_loop='scan' needs the tiles on device, but spec.train.data_placement="
            f"{cfg.get('data_placement')!r} keeps them in host memory{f' ({reason})' if reason else ''}; "
            "set spec.train.epoch_loop='auto'"
        )
    log_placement(reason)
    on_device = placement == "device"
    # No larger than the largest split: a larger batch would only compile and hold padding.
    largest_split = max(len(getattr(dataset, name).labels) for name in ("train", "val", "test"))
    eval_batch = -(-min(cfg.eval_batch_size, largest_split) // mesh.devices.size) * mesh.devices.size
    splits = {
        name: put_split(getattr(dataset, name), eval_batch, sharding, on_device=on_device)
        for name in ("train", "val", "test")
    }
    dtype = COMPUTE_DTYPES[dtype_name]
    weights = class_weights(cfg.get("class_weights"), dataset.train.labels, dataset.classes)
    # On device the step and predict gather their batches from the resident splits; from the host they get them.
    train_step = (make_train_step if on_device else make_batch_train_step)(
        parts, tx, augment_ops=augment_ops(spec.data),
        normalize_mode=spec.data.normalize, compute_dtype=dtype,
        label_smoothing=cfg.label_smoothing, mesh=mesh, class_weights=weights, frozen_backbone=cfg.freeze_backbone,
    )
    predict, predict_tta = ((make_predict if on_device else make_batch_predict)(
        parts, normalize_mode=spec.data.normalize, compute_dtype=dtype, mesh=mesh, tta=tta) for tta in (False, True))
    train_labels = np.asarray(dataset.train.labels)
    return Run(
        spec, dataset, mesh, parts, tx, schedule, train_step, scan, predict, splits,
        to_device(train_labels, sharding) if on_device else train_labels, steps_per_epoch,
        tuple(model.head_path), dtype_name, weights, predict_tta, placement, data_load_time_s=data_load_time_s,
    )


def flops_per_image(run: Run, state: TrainState) -> float | None:
    """Forward FLOPs of one image from XLA's cost analysis of one evaluation batch, the same on every backend.

    The forward is traced in its plain forms: the CPU's Winograd convolutions would count fewer
    multiplications, and its batch pieces run in loops that the cost analysis counts once.
    """
    split = run.splits["val"]
    batch = split.batch_indices.shape[1]
    predict = make_batch_predict(run.parts, normalize_mode=run.spec.data.normalize,
                                 compute_dtype=COMPUTE_DTYPES[run.dtype_name], mesh=run.mesh)
    try:
        batch_input = run.batch_struct(split.images, batch)
        with plain_forms():
            cost = jax.jit(predict).lower(state.params, state.model_state, batch_input).cost_analysis()
    except Exception:  # cost analysis is best-effort on some backends
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) / batch if flops else None


def count_layers(model_parts: ModelParts) -> int:
    """Depth as weight layers: every convolution and dense projection (kernel) counts once."""
    model = nnx.merge(model_parts.graphdef, model_parts.params, model_parts.rng_state, model_parts.model_state)
    kinds = (nnx.Conv, nnx.Linear, nnx.LinearGeneral, nnx.Einsum)
    return sum(1 for _, module in nnx.iter_graph(model) if isinstance(module, kinds))
