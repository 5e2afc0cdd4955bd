"""The ``clipmath`` command: listing, help, and errors that name the bad argument."""

from __future__ import annotations

import pytest

from clipmath.experiments import registry
from clipmath.experiments.cli import main


def test_list_names_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert name in out
    assert len(out.strip().splitlines()) == len(registry.names())


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["list", "--help"], ["shards", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: clipmath" in capsys.readouterr().out


def test_unknown_experiment_is_a_clear_error(capsys, tmp_path):
    assert main(["run", "no-such-thing", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no-such-thing" in err and "gaussian-2d" in err


def test_unknown_override_key_is_named_and_nothing_runs(capsys, tmp_path):
    out = tmp_path / "r"
    assert main(["run", "gaussian-2d", "--set", "no_such_key=1", "--out", str(out)]) == 2
    assert "'no_such_key'" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_preset_is_named(capsys, tmp_path):
    assert main(["run", "gaussian-2d", "--preset", "enormous", "--out", str(tmp_path / "r")]) == 2
    assert "'enormous'" in capsys.readouterr().err


def test_resume_needs_a_run_directory(capsys, tmp_path):
    assert main(["run", "gaussian-2d", "--resume", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
