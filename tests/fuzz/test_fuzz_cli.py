"""CLI argument values through ``mmroute.cli.main`` in-process: exit 0, or a non-zero exit with a
clear message (argparse's usage error included); never a traceback, never a run left behind."""

from __future__ import annotations

import contextlib
import io

import mlflow
from hypothesis import event, given

from fuzz_strategies import cli_argvs, fuzz_settings
from mmroute.cli import main


def _runs() -> list:
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


@fuzz_settings(80)
@given(argv=cli_argvs())
def test_fuzzed_arguments_end_in_a_clear_error(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage and one "error:" line
            code = exc.code
            assert code == 2, (argv, code)
            assert "error:" in err.getvalue(), (argv, err.getvalue())
    text = err.getvalue()
    event(f"{argv[0]} exit {code}")
    assert "Traceback" not in text, (argv, text)
    assert code in (1, 2, 3), (argv, code, out.getvalue(), text)  # every fuzzed command is an error
    lines = [line for line in text.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert lines, (argv, "an error exit must say why")
    assert lines[0].startswith(("mmroute", "usage:")), (argv, lines[0])
    assert _runs() == [], (argv, "nothing may be run or recorded")
