"""The installed console script: every verb has -h (listing its config fields with their docstrings);
user errors are one line and exit 2, never a traceback."""
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lsdc.core.cli import VERBS, main
from lsdc.core.config import TrainConfig
from lsdc.core.overrides import field_docs

LSDC = shutil.which("lsdc") or str(Path(sys.executable).parent / "lsdc")


def lsdc(*args) -> subprocess.CompletedProcess:
    """Run the installed `lsdc` entry point."""
    return subprocess.run([LSDC, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_console_script_installed():
    out = lsdc("-h")
    assert out.returncode == 0 and all(v in out.stdout for v in VERBS)


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb):
    out = lsdc(verb, "-h")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: lsdc " + verb)


@pytest.mark.parametrize("bench", ["convert", "loader", "step"])
def test_every_bench_has_help(bench, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", bench, "-h"])
    assert e.value.code == 0
    assert "usage: lsdc bench " + bench in capsys.readouterr().out


def test_train_help_lists_every_train_field_with_its_docstring():
    out = lsdc("train", "-h")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # the field list is wrapped: compare with whitespace collapsed
    assert "--train.lr (default 0.0001): Peak learning rate of everything but the backbone." in text
    docs = field_docs()["TrainConfig"]
    for f in dataclasses.fields(TrainConfig):
        assert f"--train.{f.name} (default " in text, f.name
        assert docs[f.name] in text, f.name
    assert "--model.backbone (default tf_efficientnetv2_s)" in text and "--loader.workers (default 2)" in text
    assert "--localizer." not in text and "--predict." not in text  # only the sections train uses


def test_user_error_is_one_line_exit_2(tmp_path):
    out = lsdc("score", tmp_path / "no_labels.csv", tmp_path / "no_sub.csv")
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1 and err[0].startswith("lsdc score: error:")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, needle", [
    (["synth", "{tmp}/s", "--studies", "0"], "--studies must be an integer >= 1"),
    (["preprocess", "{tmp}/missing", "{tmp}/out", "--no_such_key=1"], "unknown config key 'no_such_key'"),
])
def test_bad_input_names_the_problem(tmp_path, args, needle):
    out = lsdc(*[a.format(tmp=tmp_path) for a in args])
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr
    assert err[0].startswith(f"lsdc {args[0]}: error:") and needle in err[0]


def test_argparse_mistake_exits_2():
    out = lsdc("score")
    assert out.returncode == 2 and "lsdc score: error: the following arguments are required" in out.stderr
