import json
import runpy
from pathlib import Path

import pytest

from mmroute.cli.registry import EXIT_REFUSED
from mmroute.cli.registry import main as cli

SCRIPTS = Path(__file__).resolve().parents[2] / "registry_scripts"


def script(name):
    """The ``main`` of registry_scripts/<name>.py (loaded from its path, as MLproject runs it)."""
    return runpy.run_path(str(SCRIPTS / f"{name}.py"))["main"]


def test_register_promote_refuse_rollback_through_the_scripts(sweep, capsys):
    model = "cli-router"
    assert script("register")(["--run-id", sweep["bad"], "--model", model, "--stage", "staging"]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "staging"
    # The gate's default evaluation table is the candidate run's eval/eval_table.npz.
    assert script("promote")(["--model", model, "--to", "production"]) == 0
    assert script("register")(["--run-id", sweep["parent"], "--model", model, "--stage", "staging"]) == 0
    capsys.readouterr()
    assert script("promote")(["--model", model, "--to", "production", "--min-delta", "0.01"]) == 0
    assert json.loads(capsys.readouterr().out)["previous"] == "1"

    assert cli(["register", "--run-id", sweep["bad"], "--model", model]) == 0
    capsys.readouterr()
    assert script("promote")(["--model", model, "--version", "3", "--to", "production",
                              "--eval-table", str(sweep["eval_table"])]) == EXIT_REFUSED
    assert "refused" in capsys.readouterr().err

    assert script("status")(["--model", model, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["aliases"] == {"staging": "2", "production": "2", "previous-production": "1"}
    assert script("rollback")(["--model", model]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1"
    assert script("rollback")(["--model", model]) == 1  # nothing left to roll back to
    assert "no 'previous-production' version" in capsys.readouterr().err
    assert cli(["status", "--model", model]) == 0
    assert "production -> v1" in capsys.readouterr().out


def test_register_fails_clearly_without_a_logged_model(sweep, capsys):
    assert cli(["register", "--run-id", sweep["oracle"], "--model", "x", "--no-export"]) == 1
    assert "has no logged model named 'router'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["promote", "--to", "qa"], ["register"]])
def test_bad_arguments_exit_with_usage(argv):
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2
