"""LeNet-5, the image encoder :math:`g_u` of the labelled-MNIST experiment.

Section 6.2 of Baptista, Stuart & Tran (2025); LeCun et al. (1998).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import ImageInput
from clipmath.multimodal.encoders.base import activation as make_activation
from clipmath.multimodal.encoders.base import check_choice, check_positive_int, register


@register("lenet")
class LeNet(nn.Module):
    r"""LeNet-5 on 28x28 images, :math:`g_u: [0,1]^{C\times 28\times 28} \to \mathbb{R}^{n_e}`.

    In Section 6.2 of Baptista, Stuart & Tran (2025) :math:`g_u` is a LeNet whose n_e = 10
    outputs are read as label log-probabilities, paired with the fixed one-hot
    :math:`g_v(v) = e_v` (``fixed`` encoder, ``kind="one_hot"``) under the inner-product tilting.
    The layers (shapes for one 28x28 image)::

        conv 6@5x5, padding 2   -> 6x28x28  -> act -> pool 2 -> 6x14x14
        conv 16@5x5             -> 16x10x10 -> act -> pool 2 -> 16x5x5 -> flatten 400
        fc 120 -> act -> fc 84 -> act -> fc n_e

    The padding of 2 stands in for the original 32x32 input. Defaults are the modern reading
    (ReLU and max pooling, as in the paper's "conv + linear layers with ReLU");
    ``activation="tanh", pool="avg"`` is closer to LeCun et al. (1998).

    Inputs: uint8 pixels are scaled by 1/255 to [0, 1], the paper's image space, and float
    inputs are taken as already in [0, 1]. ``normalize`` is off by default, so the encoder sees
    the paper's :math:`u \in [0,1]^{28\times28}`; pass ``normalize=MNIST_MEAN_STD``
    (``(0.1307, 0.3081)``, the MNIST training-set pixel mean and std) to standardize after the
    scaling, which speeds up early training a little.

    Args:
        n_e: embedding dimension (10 for the ten MNIST labels).
        in_channels: image channels C.
        activation: ``relu`` (default), ``tanh`` or ``gelu``.
        pool: ``max`` (default) or ``avg`` 2x2 pooling.
        normalize: None, or ``(mean, std)`` applied after scaling to [0, 1]; each a number or a
            list of C numbers.

    Raises:
        ValueError: naming the bad argument.
    """

    def __init__(
        self,
        n_e: int = 10,
        in_channels: int = 1,
        activation: str = "relu",
        pool: str = "max",
        normalize: Any = None,
    ):
        super().__init__()
        self.n_e = check_positive_int("n_e", n_e)
        self.in_channels = check_positive_int("in_channels", in_channels)
        make_activation("activation", activation)
        pooling = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[check_choice("pool", pool, ("max", "avg"))]
        self.inputs = ImageInput(in_channels, normalize, size=(28, 28))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            make_activation("activation", activation),
            pooling(2),
            nn.Conv2d(6, 16, kernel_size=5),
            make_activation("activation", activation),
            pooling(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            make_activation("activation", activation),
            nn.Linear(120, 84),
            make_activation("activation", activation),
            nn.Linear(84, n_e),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of images.

        Args:
            x: (B, C, 28, 28) images, uint8 in [0, 255] or float in [0, 1]; (B, 28, 28) when C = 1.

        Returns:
            (B, n_e) embeddings (the unnormalized label logits of Section 6.2).

        Raises:
            ValueError: for a wrong dtype, channel count or image size.
        """
        return self.head(self.features(self.inputs(x)))
