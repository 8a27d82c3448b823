"""PyTorch twins of flaxbench's models for side-by-side speed references (not used in training)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def convmodel(num_classes: int, image_size: int, channels=(32, 64, 128), hidden: int = 256, dropout: float = 0.5):
    """The study's ConvModel as torch layers: same shapes as flaxbench.models.convmodel."""
    layers, cin = [], 3
    for cout in channels:
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = cout
    side = image_size // 8
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(side * side * cin, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


def build(name: str, num_classes: int, image_size: int, options: dict) -> nn.Module:
    """torch model for a flaxbench registry name and its spec options."""
    if name == "convmodel":
        return convmodel(num_classes, image_size, **options)
    if name == "vit":
        return torchvision.models.vision_transformer.VisionTransformer(
            image_size=image_size, patch_size=options["patch_size"], num_layers=options["depth"],
            num_heads=options["num_heads"], hidden_dim=options["width"], mlp_dim=options["mlp_dim"],
            dropout=options.get("dropout", 0.0), attention_dropout=options.get("attention_dropout", 0.0),
            num_classes=num_classes,
        )
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def train_step_fn(model: nn.Module, lr: float, dtype: str, device: str):
    """A torch training step (AdamW, cross-entropy, random flips) with optional bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    autocast = dtype == "bfloat16"

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
        x = torch.where(flip, images.flip(3), images)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step
