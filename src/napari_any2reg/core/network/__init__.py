"""Any2Reg network (architecture only): set-based, permutation-equivariant groupwise registration.

* :mod:`.blocks` — :class:`ConvBlock`, :class:`SetAggregation`, :class:`SharedUpdate`,
  :class:`FlowHead`, :func:`integrate_velocity`;
* :mod:`.auxiliary` — weight-free contrast-insensitive features (MIND, NGF);
* :mod:`.any2reg_net` — :class:`Any2RegNet` and the inference wrapper :func:`predict`;
* :mod:`.scoring` — the AdaCS correspondence scorer and :func:`predict_scores`.
"""

from .any2reg_net import DEFAULT_TRAINING_SPACING_MM, Any2RegNet, Any2RegOutput, pad_to_multiple, predict
from .auxiliary import AUXILIARY_KINDS, ContrastInsensitiveFeatures, mind_descriptors, normalised_gradient_fields
from .checkpoint import networks_from_checkpoint
from .scoring import (
    CorrespondenceScorer,
    correspondence_residual,
    predict_scores,
    residual_scores,
    scoring_inputs,
    scoring_loss,
    total_variation,
)
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
    "CorrespondenceScorer",
    "correspondence_residual",
    "scoring_inputs",
    "scoring_loss",
    "total_variation",
    "residual_scores",
    "predict_scores",
    "networks_from_checkpoint",
]
