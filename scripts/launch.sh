#!/usr/bin/env bash
# Install (if needed) and open napari with the plugin, the MOLLI phantom sample and the
# Registration panel. Extra arguments go to `python -m napari_any2reg` (e.g. --sample stone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m napari_any2reg "$@"
