"""The committed experiment results hold no data images and list exactly the figures beside them."""

import fnmatch
import importlib.util
import json
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_spec = importlib.util.spec_from_file_location("generate_results", DOCS / "generate_results.py")
generate_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate_results)

RESULTS = sorted(p for p in (DOCS / "results").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_results_folder_has_its_listed_figures_and_no_data_images(folder):
    record = json.loads((folder / "numbers.json").read_text())
    assert record["experiment"] == folder.name
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == sorted(record["figures"])
    pattern = generate_results.NO_FIGURES.get(folder.name, "")
    assert [name for name in pngs if fnmatch.fnmatch(name, pattern)] == []
