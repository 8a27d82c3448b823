"""Optimizer and learning-rate schedule from `spec.train`, with optax."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from flaxbench.errors import SpecError
from flaxbench.train.state import path_names


def make_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """Linear warmup then cosine decay (or constant), in optimizer steps."""
    total = max(int(cfg.epochs * steps_per_epoch), 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, total, 0.0) \
            if warmup > 0 else optax.cosine_decay_schedule(cfg.learning_rate, total)
    if cfg.schedule == "constant":
        return optax.warmup_constant_schedule(0.0, cfg.learning_rate, warmup) \
            if warmup > 0 else optax.constant_schedule(cfg.learning_rate)
    raise SpecError(f"spec.train.schedule '{cfg.schedule}' is unknown; use 'cosine' or 'constant'")


def _base_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    if cfg.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(cfg.weight_decay), optax.sgd(schedule, momentum=cfg.momentum)
        )
    raise SpecError(f"spec.train.optimizer '{cfg.optimizer}' is unknown; use 'adamw' or 'sgd'")


def head_labels(params: Any, head_path: tuple[str, ...]) -> Any:
    """A pytree like `params` labelling each leaf 'head' or 'backbone'."""
    head = tuple(str(p) for p in head_path)

    def label(path, _):
        return "head" if path_names(path)[: len(head)] == head else "backbone"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    cfg: ml_collections.ConfigDict, steps_per_epoch: int, head_path: tuple[str, ...]
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The spec's optimizer: clipping, frozen or slower backbone, schedule."""
    schedule = make_schedule(cfg, steps_per_epoch)
    head_tx = _base_optimizer(cfg, schedule)
    if cfg.freeze_backbone and cfg.backbone_lr_scale != 1.0:
        raise SpecError(f"spec.train.freeze_backbone=True trains no backbone weights, so spec.train.backbone_lr_scale="
                        f"{cfg.backbone_lr_scale} would do nothing; leave it at 1.0, or unfreeze the backbone")
    if cfg.freeze_backbone:
        if cfg.grad_clip_norm:  # the head's gradients alone, as torch clips the parameters it trains
            head_tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), head_tx)
        backbone_tx = optax.set_to_zero()
    elif cfg.backbone_lr_scale != 1.0:
        backbone_tx = _base_optimizer(cfg, lambda step: schedule(step) * cfg.backbone_lr_scale)
    else:
        backbone_tx = None
    tx = head_tx
    if backbone_tx is not None:
        tx = optax.multi_transform(
            {"head": head_tx, "backbone": backbone_tx}, lambda params: head_labels(params, head_path)
        )
    if cfg.grad_clip_norm and not cfg.freeze_backbone:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    return tx, schedule
