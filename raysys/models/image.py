"""Image encoder: torchvision's ResNet class, random init (no downloaded weights).

- `resnet18`: the standard torchvision ResNet-18 (11.2M parameters, 512-d output), with
  GroupNorm in place of BatchNorm (see raysys.models.base for why).
- `resnet_tiny`: the same ResNet class with BasicBlock x [1, 1, 1, 1] at widths
  (w, 2w, 4w, 8w) and a 3x3 stride-1 stem without max-pool, for small images on CPU
  (about 0.08M parameters at w = 8; output 8w).
Input `[N, 3, H, W]`; output `[N, out_dim]`. `trunk` = stem + layer1..3, `last` = layer4 +
pooling:
- `pool: grid` (default): an adaptive mean to a `grid x grid` layout, flattened
  (`out_dim * grid**2`) and a Linear back to `out_dim`, so the embedding can tell where
  things are (the demo codes a factor as a dot's clock position);
- `pool: global`: torchvision's global average pool.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, resnet18

from raysys.models.base import StagedEncoder, group_norm
from raysys.models.config import ImageEncoderConfig

STAGES = ("layer1", "layer2", "layer3", "layer4")


def narrow_resnet(width: int, blocks: tuple[int, int, int, int] = (1, 1, 1, 1)) -> ResNet:
    """torchvision ResNet with stage widths (w, 2w, 4w, 8w) and a small-image stem.

    torchvision hard-codes widths 64..512 for BasicBlock, so the stem and the four stages are
    rebuilt with its own `_make_layer` after construction.
    """
    net = ResNet(BasicBlock, list(blocks), norm_layer=group_norm)
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = group_norm(width)
    net.maxpool = nn.Identity()
    for i, name in enumerate(STAGES):
        stride = 1 if i == 0 else 2
        setattr(net, name, net._make_layer(BasicBlock, width * 2**i, blocks[i], stride=stride))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def pooling(cfg: ImageEncoderConfig, width: int) -> list[nn.Module]:
    """layer4's map `[N, width, h, w]` -> `[N, width]` (module docstring)."""
    if cfg.pool == "global":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return [nn.AdaptiveAvgPool2d(cfg.grid), nn.Flatten(), nn.Linear(width * cfg.grid**2, width)]


class ResNetEncoder(StagedEncoder):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        if cfg.kind == "resnet18":
            net, self.out_dim = resnet18(weights=None, norm_layer=group_norm), 512
        elif cfg.kind == "resnet_tiny":
            net, self.out_dim = narrow_resnet(cfg.width), 8 * cfg.width
        else:
            raise ValueError(f"model.image.kind: unknown encoder {cfg.kind!r}")
        stem = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
        self.trunk = nn.Sequential(*stem)
        self.last = nn.Sequential(net.layer4, *pooling(cfg, self.out_dim))

    def check(self, x: torch.Tensor) -> None:  # type: ignore[override]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"image encoder: expected [N, 3, H, W], got {list(x.shape)}")


def build_image_encoder(cfg: ImageEncoderConfig) -> StagedEncoder:
    return ResNetEncoder(cfg)
