"""Run directories: atomic writes, JSON conversion of arrays, markdown tables, new-run checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipmath.experiments.rundir import RunDir, atomic_write_bytes, markdown_table, prepare_new


def test_run_dir_files(tmp_path):
    run = RunDir("toy", root=tmp_path)
    assert run.path.parent == tmp_path and run.path.name.startswith("toy-")
    run.write_metrics({"a": np.float64(1.5), "m": np.eye(2), "t": torch.tensor([1.0, 2.0])})
    assert json.loads(run.file("metrics.json").read_text()) == {
        "a": 1.5,
        "m": [[1.0, 0.0], [0.0, 1.0]],
        "t": [1.0, 2.0],
    }
    run.log_step({"step": 1, "loss": np.float32(0.5)})
    run.log_step({"step": 2, "loss": 0.25})
    lines = [json.loads(line) for line in run.file("metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    assert RunDir("toy", root=tmp_path).path != RunDir("toy", root=tmp_path).path


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


def test_markdown_table_formats_floats():
    text = markdown_table(["a", "b"], [("x", 1 / 3), ("y", float("nan"))])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x | 0.333333 |", "| y | nan |"]


def test_markdown_table_escapes_bare_pipes_once():
    text = markdown_table(["q"], [("E|E[u|v]|^2",), (r"P(a \| b)",)])
    assert text.splitlines()[2:] == [r"| E\|E[u\|v]\|^2 |", r"| P(a \| b) |"]


def test_prepare_new_accepts_a_missing_or_empty_directory(tmp_path):
    prepare_new(tmp_path / "missing")
    prepare_new(tmp_path)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_new_refuses_a_file(tmp_path, overwrite):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=f"--out {tmp_path / 'f'}: exists and is not a directory"):
        prepare_new(tmp_path / "f", overwrite=overwrite)
    with pytest.raises(ValueError, match="--out '': expected a directory path"):
        prepare_new("", overwrite=overwrite)


def test_prepare_new_refuses_a_non_empty_directory_without_overwrite(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match="not empty .*config.yaml.*--resume.*--overwrite"):
        prepare_new(tmp_path)
    assert (tmp_path / "config.yaml").exists()


def test_prepare_new_with_overwrite_empties_a_run_directory_only(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "checkpoints" / "a.pt").write_bytes(b"x")
    (run / "link").symlink_to(outside, target_is_directory=True)
    prepare_new(run, overwrite=True, clear=False)  # a check alone deletes nothing
    assert (run / "config.yaml").exists()
    prepare_new(run, overwrite=True)
    assert run.is_dir() and list(run.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "keep"  # the link went, not what it pointed to
    with pytest.raises(ValueError, match="not a run directory"):
        prepare_new(outside, overwrite=True)
    assert (outside / "keep.txt").exists()
