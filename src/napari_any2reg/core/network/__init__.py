"""Any2Reg network (architecture only): set-based, permutation-equivariant groupwise registration.

* :mod:`.blocks` — :class:`ConvBlock`, :class:`SetAggregation`, :class:`SharedUpdate`,
  :class:`FlowHead`, :func:`integrate_velocity`;
* :mod:`.auxiliary` — weight-free contrast-insensitive features (MIND, NGF);
* :mod:`.any2reg_net` — :class:`Any2RegNet` and the inference wrapper :func:`predict`.
"""

from .any2reg_net import DEFAULT_TRAINING_SPACING_MM, Any2RegNet, Any2RegOutput, pad_to_multiple, predict
from .auxiliary import AUXILIARY_KINDS, ContrastInsensitiveFeatures, mind_descriptors, normalised_gradient_fields
from .blocks import AGGREGATION_MODES, ConvBlock, FlowHead, SetAggregation, SharedUpdate, integrate_velocity

__all__ = [
    "Any2RegNet",
    "Any2RegOutput",
    "predict",
    "pad_to_multiple",
    "DEFAULT_TRAINING_SPACING_MM",
    "ContrastInsensitiveFeatures",
    "mind_descriptors",
    "normalised_gradient_fields",
    "AUXILIARY_KINDS",
    "ConvBlock",
    "SetAggregation",
    "SharedUpdate",
    "FlowHead",
    "integrate_velocity",
    "AGGREGATION_MODES",
]
