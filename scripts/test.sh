#!/usr/bin/env bash
# Install everything (system packages, venv, plugin, test tools) and run the test suite.
# Viewer tests run under Xvfb, started by pytest-xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --testing
unset QT_QPA_PLATFORM  # napari needs real OpenGL: Xvfb, not Qt's offscreen platform
exec .venv/bin/python -m pytest "$@"
