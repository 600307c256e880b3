"""Every notebook in nbs/ runs top to bottom with its test cells: one pytest test per notebook.

Notebooks run in this process (they share `sys.modules`, so TensorFlow is imported once).
`nbdev.test.test_nb` is imported under another name so pytest does not collect it.
"""
from pathlib import Path

import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_nb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NOTEBOOKS])
def test_notebook(nb, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(nb.parent)
    skip_flags = get_config().tst_flags.split()
    ok, elapsed = run_nb(nb, skip_flags=skip_flags, basepath=ROOT, do_print=False)
    assert ok, f"{nb.name} failed (see the traceback above)"
