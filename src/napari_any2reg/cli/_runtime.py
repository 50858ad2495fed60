"""How ``any2reg`` runs a command: log records on stderr, and SIGTERM unwinding like Ctrl-C."""

from __future__ import annotations

import sys
import threading


class _LogFormatter:
    """``any2reg: warning: text`` for warnings and errors (like the CLI's other messages), plain
    ``text`` for information, and the logger's name with -vv."""

    def __init__(self, debug: bool):
        import logging

        self.debug = debug
        self.plain = logging.Formatter("%(message)s")

    def format(self, record) -> str:
        import logging

        text = self.plain.format(record)
        if self.debug:
            return f"{record.levelname.lower()} {record.name}: {text}"
        if record.levelno >= logging.WARNING:
            return f"any2reg: {record.levelname.lower()}: {text}"
        return text


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Log records of napari_any2reg to stderr: warnings with -q, information by default, debug with -vv.

    The handler is replaced on every call (tests call ``main`` many times, each with its own stderr).
    """
    import logging

    logger = logging.getLogger("napari_any2reg")
    for handler in [h for h in logger.handlers if getattr(h, "_any2reg_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._any2reg_cli = True
    handler.setFormatter(_LogFormatter(debug=verbose >= 2))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO)
    logger.propagate = False



class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, a closing terminal), raised in the main thread.

    A KeyboardInterrupt so that it unwinds like Ctrl-C: the atomic writers catch it, delete
    their temporary and staging files and remove folders they created, and nothing half
    written is left behind.
    """



class _SigtermAsException:
    """Turn SIGTERM into :class:`Terminated` while the command runs; restore the handler after.

    Only the first SIGTERM raises; later ones are ignored so the clean-up itself is not cut
    short (SIGKILL still stops the process at once).
    """

    def __enter__(self):
        import signal

        self.previous = None
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be installed from the main thread
        self.fired = False

        def handler(signum, frame):
            if self.fired:
                return
            self.fired = True
            raise Terminated()

        self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

