"""The console script: every verb has -h; user errors are one line and exit 2, never a traceback."""
import subprocess
import sys

import pytest

from lsdc.core.cli import VERBS, main


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "-h"])
    assert e.value.code == 0
    assert "usage: lsdc " + verb in capsys.readouterr().out


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "lsdc.core.cli", "-h"], capture_output=True, text=True)
    assert out.returncode == 0 and all(v in out.stdout for v in VERBS)


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["score", str(tmp_path / "no_labels.csv"), str(tmp_path / "no_sub.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lsdc score: error:")
    assert "Traceback" not in "\n".join(err)
