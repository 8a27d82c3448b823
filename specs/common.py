"""Shared defaults of the study: Kather 2016 via TFDS, six classes, 2550/600/600, 30 epochs.

Not a row by itself: every study spec starts from `get_config()` here and changes what the
row changes. Each key is documented once, here.
"""

import ml_collections
from ml_collections import config_dict

STUDY_CLASSES = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa")


def get_config() -> ml_collections.ConfigDict:
    """The study defaults."""
    c = ml_collections.ConfigDict()
    c.name = ""  # row name; defaults to the spec file's stem
    # human label in tables and plots (default: name); "{init}" in it says where the weights started,
    # as spec.model.init is: "ImageNet", "from scratch" or "from run NAME"
    c.title = ""
    c.seed = 0  # init, data order, augmentation and dropout

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds:colorectal_histology"  # or "folder:PATH" (folder or .zip) or "synthetic"
    c.data.classes = STUDY_CLASSES  # selects and orders classes; None = all of the source
    # train/val/test as counts, or fractions; for a source split already (folders, TFDS splits), their
    # names, e.g. ("train", "val", "test"), or ("train", 0.15, "test") to hold out 15% of train for val
    c.data.split = (2550, 600, 600)
    c.data.split_seed = 0  # the split depends on this alone, not on `seed`
    # None: split tile by tile, as the study did (a run warns where tile ids name slides its test and training
    # share, e.g. Kather 2016's). A regular expression: whole groups (patients, slides) go to one split,
    # the group being its first group (or match) in each tile id, e.g. r"CRC-Prim-HE-\d+" (Kather 2016)
    c.data.group_by = config_dict.placeholder(str)
    # K-fold cross-validation instead of `split`: cv_folds=K stratified folds of all the selected tiles; the
    # run tests on fold cv_fold, validates on the next and trains on the rest (`study --folds K` runs all K)
    c.data.cv_folds = config_dict.placeholder(int)
    c.data.cv_fold = config_dict.placeholder(int)
    c.data.image_size = config_dict.placeholder(int)  # None = native size (150 for Kather 2016)
    c.data.skip_bad_files = False  # True: skip unreadable files and list them in a warning
    # Pixel-identical tiles in two splits (a test tile that copies a training tile is not held out), or under
    # two labels: "warn" (a warning; data.json and results.json count them), "error" (refused) or "off"
    c.data.duplicates = "warn"
    # None, or "macenko": every tile (and every tile predict reads) mapped to one H&E appearance, that of
    # stain_reference (a tile's path) or, None, Macenko's usual reference (data_pipeline/stain.py)
    c.data.stain_normalize = config_dict.placeholder(str)
    c.data.stain_reference = config_dict.placeholder(str)
    c.data.tfds_data_dir = config_dict.placeholder(str)
    c.data.synthetic_per_class = 625
    c.data.synthetic_size = 150
    # On device, in this order: "hflip", "vflip", "rot90" (tissue has no orientation), "brightness",
    # "contrast", and stain jitter "hed" or "hed_strong" (see data_pipeline/device.py for the ranges)
    c.data.augment = ("hflip", "vflip", "rot90")
    c.data.normalize = "centered"  # pixels to [-1, 1]; "imagenet" for pretrained nets, or "unit"

    c.model = ml_collections.ConfigDict()
    c.model.name = "convmodel"  # see flaxbench/models/__init__.py
    # "scratch" | "imagenet" (torchvision download) | "torchvision:FILE.pth" | "checkpoint:DIR"
    # (DIR: a `flaxbench convert` output, or a run directory to fine-tune from its best checkpoint)
    c.model.init = "scratch"
    c.model.options = ml_collections.ConfigDict()  # constructor options of the model

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 30
    c.train.batch_size = 64
    c.train.eval_batch_size = 200
    c.train.optimizer = "adamw"  # or "sgd" (with momentum)
    c.train.learning_rate = 1e-3
    c.train.schedule = "cosine"  # or "constant"
    c.train.warmup_epochs = 1.0  # linear from 0; as long as the run or longer is warned about (never decays)
    c.train.weight_decay = 1e-4
    c.train.momentum = 0.9  # sgd only
    c.train.label_smoothing = 0.0
    # None, "balanced" (n / (classes * n_c) over train) or one weight per class: weights the training
    # loss for imbalanced tile sets; val/test losses stay unweighted (flaxbench/train/class_weights.py)
    c.train.class_weights = config_dict.placeholder(object)
    c.train.grad_clip_norm = config_dict.placeholder(float)  # None = no clipping
    # None = all epochs; N = stop once validation has not improved for N epochs (the schedule still
    # spans spec.train.epochs; the best epoch is tested as always)
    c.train.early_stopping_patience = config_dict.placeholder(int)
    # The validation value that picks the epoch tested: None = "val_accuracy" (the study), or
    # "val_balanced_accuracy" / "val_macro_f1" for imbalanced classes, or "val_loss"
    c.train.select_by = config_dict.placeholder(str)
    c.train.freeze_backbone = False  # train only the head (model.head_path) on fixed features: BN, dropout as in eval
    c.train.backbone_lr_scale = 1.0  # learning-rate factor for everything but the head
    c.train.dtype = "auto"  # compute: "auto" (bfloat16 on GPU/TPU, float32 on CPU), "float32", "bfloat16"; params stay float32
    # "scan": each epoch is one lax.scan; "steps": one jitted step at a time (XLA:CPU runs convs
    # in loops slowly); "auto": scan on GPU/TPU, steps on CPU.
    c.train.epoch_loop = "auto"
    c.train.deterministic = False  # XLA deterministic GPU ops (slower on GPU; CPU always is)
    # Where the tiles are held: "device" (every split copied to every device once, the fastest), "host" (each
    # batch sent from host memory as it is needed: tile sets that do not fit; same numbers), or None = "auto":
    # host only if the tiles need over half of the device memory (on CPU: more host memory than is free)
    c.train.data_placement = config_dict.placeholder(str)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data-parallel axis; -1 = all devices (of every process)
    return c
