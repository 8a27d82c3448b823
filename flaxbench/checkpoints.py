"""Orbax checkpoints of a run (best-by-validation and last) and of a converted model."""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp

from flaxbench.errors import FlaxbenchError
from flaxbench.train.state import TrainState, flat_arrays, unflat_arrays

BEST, LAST = "best", "last"
T = TypeVar("T")


def _to_tree(state: TrainState) -> dict[str, Any]:
    return {
        "params": flat_arrays(state.params),
        "model_state": flat_arrays(state.model_state),
        "opt_state": flat_arrays(state.opt_state),
    }


def _from_tree(tree: dict[str, Any], template: TrainState) -> TrainState:
    return TrainState(
        unflat_arrays(template.params, tree["params"]),
        unflat_arrays(template.model_state, tree["model_state"]),
        unflat_arrays(template.opt_state, tree["opt_state"]),
    )


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _manager_options(which: str, max_to_keep: int, read_only: bool) -> ocp.CheckpointManagerOptions:
    # Both managers save the same epoch at once; in a multi-process run orbax names its
    # cross-process barriers by epoch, so without a prefix per manager they collide.
    return ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=which),
    )


class RunCheckpoints:
    """`WORKDIR/checkpoints/{best,last}`: the best-validation epoch and the last two epochs."""

    def __init__(self, directory: str | Path, *, read_only: bool = False):
        self.directory = Path(directory).absolute()  # orbax refuses relative paths
        if read_only and not self.directory.is_dir():
            raise FlaxbenchError(f"no checkpoints in '{self.directory}'; train the run first")
        self.managers = {
            which: ocp.CheckpointManager(self.directory / which, options=_manager_options(which, keep, read_only))
            for which, keep in ((BEST, 1), (LAST, 2))
        }

    def save(self, which: str, epoch: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Save `state` and JSON `meta` as epoch `epoch` (asynchronously; see `wait`)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(_to_tree(state)), meta=ocp.args.JsonSave(meta))
        manager = self.managers[which]
        if epoch in manager.all_steps():  # saved by a run stopped before its `last` save of this epoch
            manager.delete(epoch)
        manager.save(epoch, args=args, force=True)

    def match_best(self, epoch: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Make `best` agree with the `last` checkpoint (epoch `epoch`, `state`, `meta`) a run resumes from.

        A run stopped while it saved an epoch can leave that epoch's `best` without its `last` (the
        resumed run trains the epoch again and chooses again: that `best` goes), or its `last`
        without its `best` (saved now from the same state).
        """
        best_epoch = (meta.get("best") or {}).get("epoch")
        saved = self.epochs(BEST)
        if best_epoch not in saved and best_epoch != epoch:
            return  # the newer `best` replaced it: training that epoch again saves the same again
        for step in saved:
            if step > epoch:
                self.managers[BEST].delete(step)
        if best_epoch == epoch and epoch not in saved:
            self.save(BEST, epoch, state, meta)
            self.wait()

    def wait(self) -> None:
        """Block until every pending save is on disk."""
        for manager in self.managers.values():
            manager.wait_until_finished()

    def epochs(self, which: str) -> list[int]:
        """Saved epochs of `which`, oldest first."""
        self.managers[which].reload()
        return sorted(self.managers[which].all_steps())

    def restore(self, which: str, template: TrainState) -> tuple[TrainState, dict[str, Any], int] | None:
        """Newest readable checkpoint of `which` as (state, meta, epoch); None if there is none.

        A checkpoint that fails to read (partial or corrupt) is reported by name and the one
        before it is tried.
        """
        abstract = _abstract(_to_tree(template))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())

        def read(epoch: int) -> tuple[TrainState, dict[str, Any], int]:
            restored = self.managers[which].restore(epoch, args=args)
            return _from_tree(restored.state, template), dict(restored.meta), epoch

        return _newest_readable(self.epochs(which), self.directory / which, read)

    def close(self) -> None:
        """Finish pending saves and release the managers."""
        for manager in self.managers.values():
            manager.wait_until_finished()
            manager.close()


def read_run_weights(directory: str | Path, which: str = BEST) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Params and model state (flat name -> array) of a run's newest readable `which` checkpoint.

    Read by the names and shapes the checkpoint records, without its optimizer state and without
    a model to fit them into: the model that takes them may differ in its head.
    """
    directory = Path(directory).absolute()
    if not (directory / which).is_dir():
        raise FlaxbenchError(f"no '{which}' checkpoint in '{directory}'; train the run first")
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    options = ocp.CheckpointManagerOptions(create=False)
    with ocp.CheckpointManager(directory / which, options=options, item_handlers=handlers) as manager:

        def read(epoch: int) -> tuple[dict[str, Any], dict[str, Any], int]:
            recorded = manager.item_metadata(epoch)["state"].tree
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract = {
                part: {name: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) for name, m in recorded[part].items()}
                for part in ("params", "model_state")
            }
            restore = ocp.args.PyTreeRestore(
                abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True
            )
            state = manager.restore(epoch, args=ocp.args.Composite(state=restore)).state
            return dict(state["params"]), dict(state["model_state"]), epoch

        found = _newest_readable(sorted(manager.all_steps()), directory / which, read)
    if found is None:
        raise FlaxbenchError(f"no readable '{which}' checkpoint in '{directory}'; train the run first")
    return found


def _newest_readable(epochs: list[int], where: Path, read: Callable[[int], T]) -> T | None:
    """`read(epoch)` of the newest epoch that reads; a damaged one is reported by name and the one before tried."""
    for epoch in reversed(epochs):
        try:
            return read(epoch)
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            logging.warning(
                "checkpoint %s is unreadable (%s: %s); trying the previous one",
                where / str(epoch), type(e).__name__, str(e).splitlines()[0][:200],
            )
    return None


def save_model(directory: str | Path, params: Any, model_state: Any, meta: dict[str, Any]) -> None:
    """Write a model's weights (no optimizer) and JSON `meta` as an orbax checkpoint."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        raise FlaxbenchError(f"output directory '{directory}' is not empty; choose a new --out")
    tree = {"params": flat_arrays(params), "model_state": flat_arrays(model_state)}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(directory, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))


def read_model_meta(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of a `save_model` checkpoint (architecture, class count, source)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FlaxbenchError(f"model checkpoint '{directory}' does not exist; write one with 'flaxbench convert'")
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            return dict(ckptr.restore(directory, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
    except Exception as e:
        raise FlaxbenchError(
            f"'{directory}' is not a flaxbench model checkpoint ({type(e).__name__}); write one with 'flaxbench convert'"
        ) from None


def load_model(directory: str | Path, params: Any, model_state: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Read a `save_model` checkpoint into templates `params`, `model_state`; returns them and meta."""
    directory = Path(directory).absolute()
    meta = read_model_meta(directory)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        tree = {"params": flat_arrays(params), "model_state": flat_arrays(model_state)}
        try:
            restored = ckptr.restore(
                directory, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(tree)))
            ).state
        except Exception as e:
            raise FlaxbenchError(
                f"model checkpoint '{directory}' does not fit this model ({type(e).__name__}); "
                f"it holds {meta.get('arch', 'an unknown architecture')}"
            ) from None
    return unflat_arrays(params, restored["params"]), unflat_arrays(model_state, restored["model_state"]), dict(meta)
