"""The papers' ImageNet networks, built from this library's modules, and the authors' tables.

Every mechanism of the course sits somewhere in a real network; this package puts it there, at
the position the authors' code uses, counts what the whole network costs, and loads the authors'
whole-network checkpoints. One job per file:

* :mod:`.resnets` — :class:`ResNet`, a plain ResNet with two hooks (``make_block``,
  ``after_stage``), and the ECA, BAM, SCNet and EPSANet networks built from it;
* :mod:`.rest_network` — :class:`ResT`, ResT v1 assembled from ``BasicStem``, ``PatchEmbed``
  and ``Block``;
* :mod:`.heads` — :class:`EANetHead`, EANet's segmentation head around ``ExternalAttention``
  (DANet's head is :class:`attn_tutorial.danet.DANetHead` itself);
* :mod:`.counting` — the counting conventions the papers used (FlopCounterMode FLOPs, thop's
  rules of 2019 and 2021, Caffe-style MACs), :data:`CONVENTIONS`;
* :mod:`.catalogue` — ``NETWORKS`` by name with the authors' published numbers, ``build(name)``
  (on the meta device by default, so that counting a ResNet-152 costs no memory) and
  ``count(name)``;
* :mod:`.table` — ``row``, ``table`` and ``format_table``: our counts next to the authors';
  ``python -m attn_tutorial networks`` prints it (:func:`main`);
* :mod:`.loaders` — ``OFFICIAL_NETWORKS``: how the authors' whole-network state_dict keys map
  onto ours, used by :func:`attn_tutorial.official.from_official`.

The input sizes each network takes are stated in its builder's docstring (:func:`scnet`,
:class:`ResT`, :class:`ResNet`) and tested in ``tests/test_networks.py``.
"""

from .catalogue import NETWORKS, Published, build, count, input_for
from .counting import CONVENTIONS, Count, count_thop, count_thop_2019
from .heads import EANetHead
from .loaders import OFFICIAL_NETWORKS
from .resnets import (ECA_RELEASED_KERNELS, BasicBlock, BlockFactory, Bottleneck, ResNet,
                      bam_resnet, eca_resnet, epsanet, plain_block, resnet, scnet)
from .rest_network import ResT, rest
from .table import Row, format_table, main, row, table

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "ResT", "EANetHead", "NETWORKS", "build",
           "count", "count_thop", "count_thop_2019", "Count", "Published", "Row", "row", "table",
           "format_table", "CONVENTIONS", "main", "OFFICIAL_NETWORKS", "ECA_RELEASED_KERNELS",
           "plain_block", "resnet", "eca_resnet", "bam_resnet", "scnet", "epsanet", "rest",
           "input_for"]
