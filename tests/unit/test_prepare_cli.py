"""The `prepare` entry point: dispatch, --help, exit codes, stdout/stderr discipline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from object2vec.prepare.cli import build_parser, prepare_main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ["ratings", "text-pairs", "multilabel", "sentences", "trim-embeddings", "tokenize", "silver-pairs"]


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help_that_explains_every_option(subcommand: str, capsys: pytest.CaptureFixture) -> None:
    assert prepare_main([subcommand, "--help"]) == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[subcommand]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{subcommand} {action.option_strings} has no help"
            assert action.option_strings[0] in text


def test_top_level_help_lists_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert prepare_main(["--help"]) == 0
    out = capsys.readouterr().out
    for subcommand in SUBCOMMANDS:
        assert subcommand in out


@pytest.mark.parametrize(
    "argv",
    [[], ["nonsense"], ["ratings"], ["ratings", "x.csv"], ["ratings", "x.csv", "--output-dir", "o", "--split", "bad"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert prepare_main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_client_error_is_one_line_on_stderr_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = prepare_main(["ratings", str(tmp_path / "missing.csv"), "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "missing.csv" in lines[-1]


def test_internal_fault_says_so_in_one_line_then_the_traceback_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("object2vec.prepare.ratings.run", broken)
    code = prepare_main(["ratings", str(tmp_path / "r.csv"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    first = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "internal fault" in first and "AlgorithmError: ZeroDivisionError: division by zero" in first
    assert "Traceback (most recent call last)" in err.split(first, 1)[1]


def test_interrupt_exits_130_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("object2vec.prepare.ratings.run", interrupted)
    assert prepare_main(["ratings", str(tmp_path / "r.csv"), "--output-dir", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_subprocess_prints_only_json_on_stdout(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "container")}
    argv = [sys.executable, "-m", "object2vec", "prepare", "ratings", str(FIXTURES / "ratings.inter")]
    result = subprocess.run(
        [*argv, "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["hyperparameters"]["enc0_vocab_size"] == 7
    assert "INFO" in result.stderr  # progress is logged on stderr
    assert (tmp_path / "out" / "train.jsonl").is_file()


def test_subprocess_bad_input_exits_2_with_error_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "container")}
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,5\n1,3,five\n")
    result = subprocess.run(
        [sys.executable, "-m", "object2vec", "prepare", "ratings", str(bad), "--output-dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: " in result.stderr and "line 2" in result.stderr
