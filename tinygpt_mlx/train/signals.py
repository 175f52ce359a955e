"""Graceful stop on SIGINT / SIGTERM: the loop finishes its step, saves a checkpoint and exits 128 + signal."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

# Shell convention, documented in the CLI help and README: 128 + the signal number.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """While active, SIGINT/SIGTERM set `signum` instead of killing the process; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The exit code for the received signal (0 when none arrived)."""
        return EXIT_CODES.get(signal.Signals(self.signum), 128 + self.signum) if self.signum else 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: the user does not want to wait for the save
        self.signum = signum

    def __enter__(self) -> StopRequest:
        # Handlers can only be installed from the main thread (e.g. not inside a test runner's worker).
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
