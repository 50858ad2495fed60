"""The background warm-up of the heavy modules (issue 23: no import on the GUI thread)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_warm_up_imports_the_heavy_modules_once_in_a_daemon_thread():
    # a fresh interpreter: in the test session these modules are long imported
    code = textwrap.dedent("""
        import sys, threading
        from napari_any2reg.widgets._warmup import WARM_UP_MODULES, warm_up_in_background
        assert "matplotlib.backends.backend_qtagg" not in sys.modules
        thread = warm_up_in_background()
        assert thread is not threading.main_thread() and thread.daemon
        assert warm_up_in_background() is thread  # once per process
        thread.join(120)
        assert not thread.is_alive()
        missing = [name for name in WARM_UP_MODULES if name not in sys.modules]
        assert not missing, missing
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
