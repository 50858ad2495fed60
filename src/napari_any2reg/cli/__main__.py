"""``python -m napari_any2reg.cli``: the ``any2reg`` command."""

import sys

from . import main

sys.exit(main())
