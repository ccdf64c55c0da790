"""Progress bars (lsdc/core/progress.py): ordinary tqdm on a terminal; in a log (stderr a file or a
pipe) a bounded number of plain lines instead of a carriage-return redraw per step."""
import contextlib
import os
import re
import time
from pathlib import Path

from tqdm import tqdm

import lsdc
from lsdc.core.progress import LOG_INTERVAL_S, progress_bar

FRAME = re.compile(r"^\w[\w ]*: +\d+%\|[# 0-9]*\| \d+/\d+ \[")  # "desc:  40%|####      | 40/100 [..."


def run_steps(bar, seconds: float, steps: int) -> None:
    for _ in range(steps):
        time.sleep(seconds / steps)
        bar.set_postfix(loss="0.123")  # what the training loops do at their read-backs
        bar.update()
    bar.close()


def test_in_a_log_a_bar_writes_at_most_a_line_per_interval(tmp_path):
    log, interval, seconds = tmp_path / "log.txt", 0.25, 1.5
    with open(log, "w") as f, contextlib.redirect_stderr(f):
        run_steps(progress_bar(total=600, desc="epoch", log_interval_s=interval), seconds, 600)
    text = log.read_bytes().decode()  # not read_text: universal newlines would turn each \r into a line end
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text  # no redraws, no cursor movement
    assert 2 <= len(lines) <= seconds / interval + 2
    assert all(FRAME.match(line) for line in lines), lines
    assert "600/600" in lines[-1] and "loss=0.123" in lines[-1]  # a bar left on screen ends with its final state
    assert len(set(lines)) == len(lines)  # the final state once, not twice


def test_the_same_loop_through_plain_tqdm_redraws_per_step(tmp_path):
    """The control for the test above: what a log held before, one frame per refresh."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        run_steps(tqdm(total=600, desc="epoch", file=f), 1.5, 600)
    assert log.read_bytes().count(b"\r") > 100


def test_in_a_log_a_bar_shorter_than_the_interval_writes_nothing(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f, contextlib.redirect_stderr(f):
        for _ in progress_bar(range(20_000), desc="quick"):
            pass
        run_steps(progress_bar(total=50, desc="quick epoch", leave=False), 0.2, 50)
    assert LOG_INTERVAL_S >= 10 and log.read_bytes() == b""


def test_on_a_terminal_it_is_ordinary_tqdm():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress_bar(total=3, desc="tty", file=tty, mininterval=0)
        assert type(bar) is tqdm
        for _ in range(3):
            bar.update()
        bar.close()
    out = os.read(master, 65536).decode()
    os.close(master)
    assert out.count("\r") >= 3 and "3/3" in out  # redrawn in place


def test_every_progress_bar_goes_through_the_helper():
    """No module but lsdc/core/progress.py makes a tqdm bar itself (a bare one floods a log again)."""
    root = Path(lsdc.__file__).parent
    direct = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
              if p != root / "core" / "progress.py" and re.search(r"^\s*(from|import) tqdm", p.read_text(), re.M)]
    assert direct == []
