"""A small ResNet for 32x32 (or 28x28) images, a stronger image encoder than LeNet."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import ImageInput
from clipmath.multimodal.encoders.base import check_positive_int, register


class BasicBlock(nn.Module):
    r"""Residual block :math:`x \mapsto \mathrm{relu}(F(x) + S(x))` of He et al. (2016).

    :math:`F` is conv3x3 (stride s) - BN - ReLU - conv3x3 - BN; the shortcut :math:`S` is the
    identity, or conv1x1 (stride s) - BN when the width or resolution changes.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (2 halves H and W).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, ceil(H / stride), ceil(W / stride))."""
        return self.act(self.residual(x) + self.shortcut(x))


@register("small_resnet")
class SmallResNet(nn.Module):
    r"""A CIFAR-style ResNet with three stages, :math:`g: \mathbb{R}^{C\times H\times W} \to \mathbb{R}^{n_e}`.

    An image encoder :math:`g_u` (Section 2 of Baptista, Stuart & Tran (2025)) for small
    images, in the pattern of He et al. (2016)'s CIFAR networks. Shapes for a 32x32 input
    with ``width = w``::

        stem   conv3x3 w - BN - ReLU           -> w x 32 x 32
        stage1 `blocks` basic blocks, stride 1 -> w x 32 x 32
        stage2 `blocks` basic blocks, stride 2 -> 2w x 16 x 16
        stage3 `blocks` basic blocks, stride 2 -> 4w x 8 x 8
        global average pool -> 4w -> linear -> n_e

    The global (adaptive) average pool makes any input of at least 4x4 work: 28x28 MNIST
    gives 4w x 7 x 7 before the pool. ``blocks = 3`` gives ResNet-20 of He et al.

    The network uses BatchNorm, so its output for one item depends on the rest of the batch in
    training mode; call ``.eval()`` for retrieval and evaluation. Inputs: uint8 pixels are
    scaled by 1/255 to [0, 1], float inputs are taken as already in [0, 1], and ``normalize``
    (off by default) then standardizes each channel.

    Args:
        n_e: embedding dimension.
        in_channels: image channels C (3 for RGB, 1 for MNIST).
        width: channels w of the first stage; the stages have w, 2w and 4w.
        blocks: basic blocks per stage.
        normalize: None, or ``(mean, std)`` applied after scaling to [0, 1]; each a number or a
            list of C numbers.

    Raises:
        ValueError: naming the bad argument.
    """

    def __init__(self, n_e: int, in_channels: int = 3, width: int = 32, blocks: int = 1, normalize: Any = None):
        super().__init__()
        self.n_e = check_positive_int("n_e", n_e)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_positive_int("width", width)
        check_positive_int("blocks", blocks)
        self.inputs = ImageInput(in_channels, normalize, min_size=4)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, n_e)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of images.

        Args:
            x: (B, C, H, W) images with H, W >= 4, uint8 in [0, 255] or float in [0, 1];
                (B, H, W) when C = 1.

        Returns:
            (B, n_e) embeddings.

        Raises:
            ValueError: for a wrong dtype, channel count or too small an image.
        """
        return self.head(self.features(self.inputs(x)))
