"""`miscnn-lite sweep`: a grid of papermill jobs on a Dask LocalCluster and on local processes."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from miscnn_lite.experiments import run_sweep


def demo_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('epochs = 3  # training epochs\nout_dir = "results"  # output folder')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        'import json, pathlib\nassert epochs > 0, "epochs must be positive"\n'
        'pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n'
        'pathlib.Path(out_dir, "result.json").write_text(json.dumps({"kidney_dice": epochs / 10,\n'
        '    "test_ensemble_dice": {"kidney": epochs / 20, "tumor": None},   # nested, as kits19_cv writes them\n'
        '    "real_ct": {"DICE": 0.5, "kidney_hu_p10_p50_p90": {"real_ct": [1, 2, 3]}}}))')
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "python3"}
    nbformat.write(nb, path)
    return path


def test_sweep_on_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    nb = demo_notebook(tmp_path / "demo.ipynb")
    spec = {"notebook": str(nb), "grid": {"epochs": [1, -1, 5]}}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        table = run_sweep(spec, tmp_path / "sweep", scheduler=cluster.scheduler_address)
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert table.loc[0, "kidney_dice"] == pytest.approx(0.1) and table.loc[2, "kidney_dice"] == pytest.approx(0.5)
    assert "epochs must be positive" in table.loc[1, "error"]
    assert Path(table.loc[1, "notebook"]).name == "run.failed.ipynb"
    saved = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(saved["status"]) == ["ok", "failed", "ok"]
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    assert saved.loc[2, "test_ensemble_dice.kidney"] == pytest.approx(0.25)    # one level flattened
    assert saved.loc[0, "real_ct.kidney_hu_p10_p50_p90"] == '{"real_ct": [1, 2, 3]}'   # deeper: JSON text


def test_sweep_command_line_with_processes(tmp_path):
    nb = demo_notebook(tmp_path / "demo.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "base": {"epochs": 2}, "grid": {"epochs": [2, 3]}}))
    exe = Path(sys.executable).parent / "miscnn-lite"
    r = subprocess.run([str(exe), "sweep", str(grid), "--out", str(tmp_path / "out"), "--workers", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert list(table["kidney_dice"]) == [0.2, 0.3]
    quick = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s")   # Dask retries 30 s by default
    for address in ("tcp://127.0.0.1:1", "notanaddress"):        # nothing listens there; not an address at all
        r = subprocess.run([str(exe), "sweep", str(grid), "--out", str(tmp_path / "o2"), "--scheduler", address],
                           capture_output=True, text=True, timeout=300, env=quick)
        assert r.returncode == 2 and f"scheduler {address!r}: " in r.stderr, r.stderr
        assert "running Dask scheduler as host:port" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_failed_job_reports_no_earlier_result(tmp_path):
    "A job that fails in a folder holding an earlier run's result.json reports no metrics, not that run's."
    from miscnn_lite.experiments import _run_job
    nb = demo_notebook(tmp_path / "demo.ipynb")
    job = tmp_path / "000_epochs--1"
    job.mkdir()
    (job / "result.json").write_text('{"kidney_dice": 0.91}')
    row = _run_job(str(nb), str(job), {"epochs": -1})
    assert row["status"] == "failed" and "epochs must be positive" in row["error"]
    assert "kidney_dice" not in row
    assert _run_job(str(nb), str(job), {"epochs": 4})["kidney_dice"] == pytest.approx(0.4)
    assert not (job / "run.failed.ipynb").exists()            # the earlier failure of this job is gone with its fix
    row = _run_job(str(nb), str(job), {"epochs": -2})          # and a new failure says what the folder still holds
    assert row["status"] == "failed" and "still holds an earlier, successful run of this job" in row["error"]


def test_sweep_spec_file_notebook_is_relative_to_it_and_out_dir_is_refused(tmp_path, monkeypatch):
    from miscnn_lite.experiments import expand_grid
    from miscnn_lite.io import MiscnnError
    (tmp_path / "specs").mkdir()
    demo_notebook(tmp_path / "specs" / "demo.ipynb")
    (tmp_path / "specs" / "grid.yaml").write_text("notebook: demo.ipynb\ngrid: {epochs: [1]}\n")
    monkeypatch.chdir(tmp_path)                               # not the spec's folder
    table = run_sweep(tmp_path / "specs" / "grid.yaml", tmp_path / "out", executor=_Inline())
    assert list(table["status"]) == ["ok"] and table.loc[0, "kidney_dice"] == pytest.approx(0.1)
    for spec in ({"base": {"out_dir": "x"}, "grid": {"epochs": [1]}}, {"grid": {"out_dir": ["a", "b"]}}):
        with pytest.raises(MiscnnError, match="out_dir cannot be set: each job writes into its own folder"):
            expand_grid(spec)


class _Inline:
    "An executor that runs each job in this process (no worker start-up in a unit test)."
    def submit(self, fn, *args):
        from concurrent.futures import Future
        future = Future()
        future.set_result(fn(*args))
        return future


def test_sweep_resolves_relative_dataset_paths_before_any_job(tmp_path, monkeypatch):
    "A relative data_dir is the current folder's (jobs run in the notebook's folder); a missing one is refused first."
    from miscnn_lite.experiments import run_sweep
    from miscnn_lite.io import MissingFileError
    monkeypatch.chdir(tmp_path)
    spec = {"notebook": "kits19_cv", "base": {"data_dir": "data/kits19"}, "grid": {"seed": [0, 1]}}
    with pytest.raises(MissingFileError, match=f"data_dir {tmp_path / 'data' / 'kits19'}: no such dataset folder"):
        run_sweep(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


class _DiesOnSecond(_Inline):
    "An executor whose second job's worker process dies (as a pool reports it)."
    def submit(self, fn, *args):
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool
        self.n = getattr(self, "n", 0) + 1
        if self.n != 2:
            return super().submit(fn, *args)
        future = Future()
        future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
        return future


def test_a_dead_worker_fails_its_job_and_the_sweep_table_keeps_the_others(tmp_path):
    nb = demo_notebook(tmp_path / "demo.ipynb")
    table = run_sweep({"notebook": str(nb), "grid": {"epochs": [1, 2, 3]}}, tmp_path / "out", executor=_DiesOnSecond())
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert list(table["kidney_dice"].round(2).fillna(-1)) == [0.1, -1, 0.3]
    assert "BrokenProcessPool" in table.loc[1, "error"] and "worker process stopped" in table.loc[1, "error"]
    assert (tmp_path / "out" / "sweep.csv").is_file()


def test_sweep_specs_with_a_bad_notebook_or_an_output_inside_the_data_are_refused(tmp_path):
    from miscnn_lite.experiments import expand_grid
    from miscnn_lite.io import MiscnnError, SettingsError
    for spec in ({"notebook": 5, "grid": {"epochs": [1]}}, {"notebook": None, "grid": {"epochs": [1]}}):
        with pytest.raises(MiscnnError, match="sweep spec: notebook must be a shipped notebook's name or a path"):
            expand_grid(spec)
    with pytest.raises(MiscnnError, match="sweep spec: base must be a mapping"):
        expand_grid({"base": 0, "grid": {"epochs": [1]}})
    (tmp_path / "data").mkdir()
    nb = demo_notebook(tmp_path / "demo.ipynb")
    spec = {"notebook": str(nb), "base": {"data_dir": str(tmp_path / "data")}, "grid": {"epochs": [1]}}
    nb.write_text(nb.read_text().replace("epochs = 3", "data_dir = None\\nepochs = 3"))
    with pytest.raises(SettingsError, match="holds the results folder"):
        run_sweep(spec, tmp_path / "data" / "sweep", executor=_Inline())
    assert not (tmp_path / "data" / "sweep").exists()


def test_a_dead_kernel_keeps_the_notebook_as_far_as_it_ran(tmp_path):
    from miscnn_lite.experiments import ExperimentFailed, run_notebook
    nb = demo_notebook(tmp_path / "demo.ipynb")
    cells = nbformat.read(nb, as_version=4)
    cells.cells.append(nbformat.v4.new_code_cell("import os\nos._exit(1)        # as the out-of-memory killer would"))
    nbformat.write(cells, nb)
    with pytest.raises(ExperimentFailed, match=r"the run stopped with DeadKernelError: .*kept at .*run.failed.ipynb"):
        run_notebook(nb, tmp_path / "out" / "run.ipynb", {"out_dir": str(tmp_path / "out")})
    kept = nbformat.read(tmp_path / "out" / "run.failed.ipynb", as_version=4)
    assert len(kept.cells) == 4 and (tmp_path / "out" / "result.json").is_file()    # parameters injected; ran up to it
