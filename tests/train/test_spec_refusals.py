"""Specs that cannot train are refused with one line naming the key, before the tiles load where they need none."""

import re

import pytest

from flaxbench.errors import SpecError
from flaxbench.train.loop import train_and_evaluate
from tests.helpers import tiny_spec


@pytest.mark.parametrize("override, needle", [
    ({"train.epochs": 0}, "spec.train.epochs=0"),
    ({"train.batch_size": 0}, "spec.train.batch_size=0"),
    ({"data.split": (48, 0, 24)}, "no val tiles"),
    ({"data.split": (0.8, 0.2, 0)}, "no test tiles"),
    ({"train.learning_rate": -1e-3}, "spec.train.learning_rate=-0.001 must be a number above 0"),
    ({"train.learning_rate": float("nan")}, "spec.train.learning_rate=nan"),
    ({"train.weight_decay": -0.1}, "spec.train.weight_decay=-0.1 must be a number of at least 0"),
    ({"train.optimizer": "sgd", "train.momentum": 1.0}, "spec.train.momentum=1.0 must be a number in [0, 1)"),
    ({"train.label_smoothing": 2.0}, "spec.train.label_smoothing=2.0 must be a number in [0, 1)"),
    ({"train.warmup_epochs": -1.0}, "spec.train.warmup_epochs=-1.0"),
    ({"train.backbone_lr_scale": -0.5}, "spec.train.backbone_lr_scale=-0.5"),
    ({"train.grad_clip_norm": 0.0}, "spec.train.grad_clip_norm=0.0 must be None or a number above 0"),
    ({"model.options": {"dropout": 1.5}}, "spec.model.options.dropout=1.5 is not a drop rate"),
    ({"model.options": {"dropout": 1.0}}, "spec.model.options.dropout=1.0 is not a drop rate; use a value in [0, 1)"),
    ({"train.early_stopping_patience": 0}, "spec.train.early_stopping_patience=0 must be None or a whole number"),
])
def test_numbers_that_cannot_train_are_refused_naming_the_key(tmp_path, override, needle):
    with pytest.raises(SpecError, match=re.escape(needle)):
        train_and_evaluate(tiny_spec(**override), tmp_path, log=lambda s: None)
    assert not (tmp_path / "spec.json").exists()


@pytest.mark.parametrize("override, needle", [
    ({"train.optimizer": "lamb"}, "spec.train.optimizer 'lamb' is unknown"),
    ({"train.schedule": "step"}, "spec.train.schedule 'step' is unknown"),
    ({"train.epoch_loop": "fast"}, "spec.train.epoch_loop 'fast' is unknown"),
    ({"model.name": "resnet9"}, "unknown model name 'resnet9'"),
    ({"model.options": {"hidden": 0}}, "spec.model.options.hidden=0 must be"),
    ({"model.options": {"depth": 3}}, "model 'convmodel' has no option 'depth'"),
    ({"model.init": "imagnet"}, "spec.model.init 'imagnet' is unknown"),
    ({"model.init": "torchvision:/no/such.pth"}, "weights file '/no/such.pth' does not exist"),
    ({"model.init": "checkpoint:/no/such/run"}, "'/no/such/run' does not exist"),
    ({"train.select_by": "val_auc"}, "spec.train.select_by='val_auc' is unknown"),
    ({"train.data_placement": "gpu"}, "spec.train.data_placement='gpu' is unknown"),
    ({"seed": None}, "spec.seed=None must be a whole number"),
    ({"seed": 2**64}, "spec.seed=18446744073709551616 must be a whole number"),
    ({"mesh.data": 0}, "spec.mesh.data=0 must be -1"),
    ({"train.deterministic": None}, "spec.train.deterministic=None must be True or False"),
    ({"model.init": None}, "spec.model.init=None must be"),
    ({"model.options": {"channels": (8,)}}, "convmodel cannot be built with"),
    ({"model.name": "vit", "model.options": {"patch_size": 4, "image_size": 64}},
     "options.image_size=64 but the tiles"),
])
def test_what_needs_no_tiles_is_refused_before_they_load(tmp_path, override, needle):
    # Loading a large tile folder takes minutes; a typo in the spec should not wait for it.
    spec = tiny_spec(**{"data.source": f"folder:{tmp_path}/not_loaded", **override})
    with pytest.raises(SpecError, match=re.escape(needle)):
        train_and_evaluate(spec, tmp_path / "run", log=lambda s: None)


def test_weights_of_another_model_are_refused_before_the_tiles_load(tmp_path):
    import torch
    import torchvision

    from flaxbench.errors import WeightsError

    alexnet = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(num_classes=3).state_dict(), alexnet)
    fold = tmp_path / "row_3fold" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "spec.json").write_text("{}")
    resnet = {"data.source": f"folder:{tmp_path}/not_loaded", "model.name": "resnet18", "model.options": {}}
    for init, error, needle in [
        (f"torchvision:{alexnet}", WeightsError, f"'{alexnet}' has no 'fc.weight', the classifier of torchvision's "
                                                 "resnet18"),
        (f"checkpoint:{alexnet}", SpecError, f"is a file, not a 'flaxbench convert' output or a run directory; for a "
                                             f"torchvision .pth use spec.model.init=torchvision:{alexnet}"),
        (f"torchvision:{tmp_path}", SpecError, "is a folder; give the torchvision .pth file"),
        (f"checkpoint:{fold.parent}", WeightsError, f"is a cross-validated row's folder; start from one of its "
                                                    f"runs, e.g. spec.model.init=checkpoint:{fold}"),
    ]:
        with pytest.raises(error, match=re.escape(needle)):
            train_and_evaluate(tiny_spec(**resnet, **{"model.init": init}), tmp_path / "run", log=lambda s: None)


def test_tiles_too_small_for_the_model_are_refused_naming_the_key(tmp_path):
    with pytest.raises(SpecError, match=r"spec\.data\.image_size: convmodel needs tiles of at least 8 px, got 4"):
        train_and_evaluate(tiny_spec(**{"data.image_size": 4}), tmp_path, log=lambda s: None)
