#!/usr/bin/env bash
# Install napari-any2reg into ./.venv on a fresh Debian machine (Python >= 3.10).
#   bash scripts/install.sh            # plugin + Qt binding
#   bash scripts/install.sh --testing  # also the test tools (pytest, pytest-qt, pytest-xvfb)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="pyqt6"
[ "${1:-}" = "--testing" ] && extras="pyqt6,testing"

# System libraries for Qt/OpenGL under Xvfb (napari needs real GL; offscreen Qt has none).
apt_packages="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri
  libdbus-1-3 libfontconfig1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-image0 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-xfixes0"
# the tests also run elastix's transformix on the exported fields (tests/io/test_io_world_fields.py)
[ "${1:-}" = "--testing" ] && apt_packages="$apt_packages elastix"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then sudo_cmd=""; elif command -v sudo >/dev/null; then sudo_cmd="sudo"; else
    echo "install.sh: missing system packages:$missing (run as root or install them)" >&2; exit 1; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pin torch first: an unpinned torch would pull several GB of CUDA wheels (the package accepts a range).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[$extras]"
echo "napari-any2reg installed in $(pwd)/.venv"
