"""The one helper behind every module's ``reset_parameters()``.

Each mechanism's ``reset_parameters()`` is its authors' initialisation: PyTorch's default for
every layer, then the authors' overrides (``_bam_init``, ``_epsanet_init``, ...). Construction
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
