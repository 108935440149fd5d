"""The one helper behind every module's ``reset_parameters()``.

Each mechanism's ``reset_parameters()`` is its authors' initialisation: PyTorch's default for
every layer, then the authors' overrides (``_bam_init``, :func:`resnet_conv_bn_init`, ...). Construction
applies only the overrides, because freshly built layers already hold PyTorch's default; so a
module built under a seed draws exactly the random numbers it always drew.
"""

from __future__ import annotations

from torch import nn


def reset_torch_layers(module: nn.Module) -> None:
    """PyTorch's default initialisation for every torch layer inside ``module`` (convs, linears,
    norms; a BatchNorm's running statistics too), each once."""
    for layer in module.modules():
        if type(layer).__module__.startswith("torch.nn.") and hasattr(layer, "reset_parameters"):
            layer.reset_parameters()


def resnet_conv_bn_init(module: nn.Module) -> None:
    """The ResNet-family init that the ECA-Net, SCNet and EPSANet code share: every Conv2d weight
    kaiming-normal with fan_out (normal with std √(2 / (k·k·out_channels))), every BatchNorm2d
    weight 1 and bias 0. Conv biases and other layers keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
