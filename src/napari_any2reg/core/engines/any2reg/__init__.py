"""``any2reg`` and ``any2reg-io``: the trained set network, and the same refined per sequence.

* ``any2reg`` — one forward pass of the shipped :class:`~core.network.Any2RegNet` (any N, any
  size, any spacing, any contrast; ~1 s on a CPU). The AdaCS scorer shipped with it produces
  the per-frame correspondence maps (``result.extras["correspondence"]``).
* ``any2reg-io`` — instance optimisation: the network's field refined by ``io_steps`` Adam
  steps (30) on the training loss of this very sequence (CTE inside the border mask +
  ``lambda_reg`` x mean|grad u|^2 + group-motion penalty, plus a MIND structure term), at the
  training spacing, with the
  correction parameterised on a coarse control grid so that it stays smooth.

The weights come from the package's ``weights/`` folder (hash-verified by the io layer's
:mod:`~napari_any2reg.io.model_io`, the :func:`core.weights.weights_source`) once per process and device; ``weights=PATH`` uses a training checkpoint
or ``best.pt`` instead (benchmarks, ablations).

The subpackage: :mod:`.pretrained` (the weights and their loading), :mod:`.coarse` (the
translation before the network), :mod:`.passes` (working grid, network passes, displacement
SD), :mod:`.refinement` (instance optimisation, classical refinement) and :mod:`.engine` (the
two registered engines). Importing it registers both engines.
"""

from __future__ import annotations

# Besides __all__, the names that callers import from this path (the benchmarks, the cache the
# weights tests clear, the module constants) are imported here too.
from .coarse import coarse_translation
from .engine import any2reg_engine, any2reg_io_engine
from .passes import (
    DEFAULT_COARSE_PASS_MM,
    DEFAULT_PASSES,
    MAX_WORKING_PIXELS,
    UNCERTAINTY_SHIFTS_PX,
    _network_field,
    displacement_sd_mm,
    pass_schedule,
    working_grid,
)
from .pretrained import (
    DEFAULT_ORIENTATIONS,
    DEFAULT_WEIGHTS,
    Pretrained,
    _load_cached,
    load_pretrained,
    shipped_weights_available,
    shipped_weights_name,
)
from .refinement import REFINEMENTS, classical_refinement, instance_optimise, sequence_loss

__all__ = ["DEFAULT_WEIGHTS", "load_pretrained", "shipped_weights_name", "sequence_loss", "coarse_translation", "Pretrained",
           "instance_optimise", "any2reg_engine", "any2reg_io_engine"]
