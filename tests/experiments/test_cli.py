"""The ``clipmath`` command: listing, help, and errors that name the bad argument."""

from __future__ import annotations

import dataclasses

import pytest

from clipmath.experiments import registry
from clipmath.experiments.cli import build_parser, main


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


def _one_line_error(capsys, *fragments):
    """The command failed with exactly one line on stderr, naming every fragment, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert len(lines) == 1 and lines[0].startswith("clipmath: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("where", ["file", "under_file", "empty"])
def test_bad_out_paths_are_one_line_errors_naming_the_path(capsys, tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = {"file": str(tmp_path / "f"), "under_file": str(tmp_path / "f" / "sub"), "empty": ""}[where]
    assert main(["run", "gaussian-2d", "--out", out]) == 2
    _one_line_error(capsys, f"--out {out}")


def test_a_non_empty_out_is_refused_and_left_as_it_was(capsys, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("seed: 5\n")
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    assert main(["run", "gaussian-2d", "--out", str(old)]) == 2
    _one_line_error(capsys, f"--out {old}", "not empty", "--resume", "--overwrite")
    assert (old / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (old / "config.yaml").read_text() == "seed: 5\n"


def test_overwrite_empties_an_earlier_run_first(capsys, tmp_path):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text("seed: 5\n")
    (old / "metrics.jsonl").write_text('{"stale": true}\n')
    (old / "checkpoints" / "stale.pt").write_bytes(b"x")
    assert main(["run", "gaussian-2d", "--out", str(old), "--overwrite", "--set", "figures.grid_points=21"]) == 0
    assert not (old / "checkpoints").exists() and not (old / "metrics.jsonl").exists()
    assert "seed: 0" in (old / "config.yaml").read_text() and (old / "metrics.json").exists()


def test_overwrite_never_empties_a_folder_that_is_not_a_run(capsys, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    assert main(["run", "gaussian-2d", "--out", str(folder), "--overwrite"]) == 2
    _one_line_error(capsys, f"--out {folder}", "not a run directory")
    assert (folder / "notes.txt").read_text() == "keep"


def test_overwrite_and_out_do_not_go_with_resume(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert main(["run", "gaussian-2d", "--resume", str(tmp_path), "--overwrite"]) == 2
    _one_line_error(capsys, "--resume", "--overwrite")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fit: [1,\n", "not valid YAML"),
        ("", "expected a mapping"),
        ("- 1\n", "expected a mapping"),
        ("figures:\n  grid_points: 0\n", "figures.grid_points=0"),
    ],
)
def test_a_bad_saved_config_is_a_one_line_error(capsys, tmp_path, text, fragment):
    (tmp_path / "config.yaml").write_text(text)
    assert main(["run", "gaussian-2d", "--resume", str(tmp_path)]) == 2
    _one_line_error(capsys, f"--resume {tmp_path}", fragment)


def test_resume_from_a_config_yaml_that_is_a_folder(capsys, tmp_path):
    (tmp_path / "config.yaml").mkdir()
    assert main(["run", "gaussian-2d", "--resume", str(tmp_path)]) == 2
    _one_line_error(capsys, f"--resume {tmp_path}", "config.yaml")


@pytest.mark.parametrize("override", ["fit=[1,", "fit.restarts={a", "tau='1", "tau=\t1: 2"])
def test_malformed_yaml_in_set_names_the_override(capsys, tmp_path, override):
    out = tmp_path / "r"
    assert main(["run", "gaussian-2d", "--set", override, "--out", str(out)]) == 2
    _one_line_error(capsys, "override", "not valid YAML")
    assert not out.exists()


@pytest.mark.parametrize(
    ("experiment", "override", "fragment"),
    [
        ("gaussian-2d", "figures.grid_points=0", "figures.grid_points=0"),
        ("gaussian-2d", "figures.extent=0", "figures.extent=0.0"),
        ("gaussian-2d", "figures.condition_at=.inf", "figures.condition_at=inf"),
        ("gaussian-2d", "fit.gtol=-1", "fit.gtol=-1.0"),
        ("gaussian-2d", "fit.restarts=0", "fit.restarts=0"),
        ("gaussian-2d", "seed=-1", "seed=-1"),
        ("gaussian-2d", "cov=[[1.5, 1.0], [0.0, 1.5]]", "cov="),
        ("gaussian-2d", "tau=.nan", "'tau'"),
        ("gaussian-train", "batch_size=0", "batch_size=0"),
        ("gaussian-process", "loss.name=nope", "nope"),
        ("gaussian-process", "source.n_modes=0", "n_modes=0"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(capsys, tmp_path, experiment, override, fragment):
    out = tmp_path / "r"
    assert main(["run", experiment, "--set", override, "--out", str(out)]) == 2
    _one_line_error(capsys, fragment)
    assert not out.exists()


def test_the_help_example_override_is_accepted(capsys):
    from clipmath.experiments.config import resolve

    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "--set train.lr=1e-3" in help_text
    config = resolve(registry.get("gaussian-process").config_type, "gaussian-process", "quick", ["train.lr=1e-3"])
    assert config.train.lr == 1e-3


def test_os_errors_during_a_run_are_one_line_errors_naming_the_path(capsys, tmp_path, monkeypatch):
    experiment = registry.get("gaussian-2d")

    def run(config, run_dir):
        raise PermissionError(13, "Permission denied", "/data/shards/shard-000.tar")

    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(experiment, run=run))
    assert main(["run", "gaussian-2d", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "/data/shards/shard-000.tar: Permission denied")
