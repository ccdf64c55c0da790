"""Progress bars that suit a terminal and a log file alike: :func:`progress_bar`, the one way lsdc makes one.

On a terminal it is ordinary tqdm, redrawn in place. When stderr is not a terminal (``make demo > log
2>&1``, CI, a pipe) every redraw would land in the file as one more carriage-return frame (they were most
of the demo's log), so there a bar writes a plain line at most every ``LOG_INTERVAL_S`` seconds, nothing
for a bar that finishes sooner, and no erase sequence when it closes.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

#: seconds between two lines of one bar in a log, and how long a bar runs before its first line
LOG_INTERVAL_S = 15.0
_CURSOR_UP = "\x1b[A"  # what tqdm writes to move between stacked bars; meaningless in a file


class _LogLines:
    """The text stream a log-mode bar writes to: each tqdm frame (``\\r`` + text + padding) becomes one
    line; the blank frames tqdm writes to erase a bar become nothing."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace(_CURSOR_UP, "").strip()
        if line:
            sys.stdout.flush()  # stdout and stderr share the log: keep what was printed before first
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """tqdm that redraws only on its interval: in a file every redraw is one more line."""

    monitor_interval = 0  # tqdm's monitor thread forces a redraw of a slow bar every 10 s

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)  # shown with the next line

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)

    def close(self):
        if not self.disable and self.n == self.last_print_n:
            self.leave = False  # its last line already says where it ended; do not write it twice
        super().close()


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable=None, *, file=None, log_interval_s: float = LOG_INTERVAL_S, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` writing to ``file`` (default: stderr at call time); when that is not a
    terminal, a log-friendly bar: at most one plain ASCII line per ``log_interval_s`` seconds."""
    file = sys.stderr if file is None else file
    if is_terminal(file):
        return tqdm(iterable, file=file, **kwargs)
    log = {"mininterval": log_interval_s, "maxinterval": log_interval_s, "delay": log_interval_s,
           "ascii": True, "dynamic_ncols": False}
    return _LogBar(iterable, file=_LogLines(file), **{**kwargs, **log})
