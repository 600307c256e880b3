"""The library's plain 3D U-Net written in plain PyTorch: the reference the benchmarks time against.

`TorchUNet(n_classes, in_channels, depth, base_filters)` is `miscnn_lite.models.unet(n_classes,
in_channels, ndim=3, depth, base_filters, normalization="batch")` layer for layer: per level two
3×3×3 convolutions without bias, each followed by batch norm and ReLU; 2× max pooling down; a 2×2×2
transposed convolution (with bias) up, concatenated with the skip (upsampled first); a 1×1×1
convolution head. The parameter counts are equal (checked by `tests/test_bench.py`). It returns
logits (B, n_classes, D, H, W); `dice_ce_loss` is soft Dice over all classes (sums per sample and
class) plus cross-entropy, as `miscnn_lite.losses.DiceCELoss()` computes them.
"""
import torch
from torch import nn
from torch.nn import functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout, eps=1e-3), nn.ReLU(),
                         nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout, eps=1e-3), nn.ReLU())


class TorchUNet(nn.Module):
    def __init__(self, n_classes: int = 3, in_channels: int = 1, depth: int = 4, base_filters: int = 32,
                 max_filters: int = 512):
        super().__init__()
        filters = [min(base_filters * 2 ** level, max_filters) for level in range(depth + 1)]
        self.encoder = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([in_channels] + filters, filters))
        self.up = nn.ModuleList(nn.ConvTranspose3d(filters[level + 1], filters[level], 2, stride=2)
                                for level in range(depth))
        self.decoder = nn.ModuleList(conv_block(2 * filters[level], filters[level]) for level in range(depth))
        self.head = nn.Conv3d(filters[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(F.max_pool3d(x, 2) if level else x)
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(len(self.up))):
            x = self.decoder[level](torch.cat([self.up[level](x), skips[level]], dim=1))
        return self.head(x)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    "Soft Dice loss (mean over samples and classes) + cross-entropy; `target` (B, D, H, W) int64."
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    axes = tuple(range(2, logits.ndim))
    tp = (probs * onehot).sum(axes)
    dice = (2 * tp + smooth) / (probs.sum(axes) + onehot.sum(axes) + smooth)
    return (1 - dice.mean()) + F.cross_entropy(logits.float(), target)


def conv_flops(model: nn.Module, shape) -> float:
    "Multiply-adds × 2 of every (transposed) convolution for one input of `shape` (C, D, H, W), forward only."
    total, hooks = [0.0], []

    def count(module, inputs, output):
        k = module.weight.shape                       # Conv3d (out, in, k, k, k); ConvTranspose3d (in, out, k, k, k)
        taps = k[1] * k[2] * k[3] * k[4]
        # a convolution: every output value sums `in·k³` products; a transposed one: every input value
        # is spread over `out·k³` outputs
        total[0] += 2 * taps * (inputs[0][0] if isinstance(module, nn.ConvTranspose3d) else output[0]).numel()
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            hooks.append(m.register_forward_hook(count))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, *shape), device=next(model.parameters()).device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]
