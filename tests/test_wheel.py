"""The package as a student or researcher gets it: the wheel, installed into a fresh virtual environment
outside the repository, every command run from an empty folder.

The wheel is built from a copy of the files git knows (tracked, or new and not ignored), so a stale
`build/` folder or caches in the checkout cannot leak into it. The fresh environment borrows the
development environment's installed dependencies through a `.pth` file pointing at a folder of links
to them (the development copy of miscnn_lite and its editable-install hooks left out): a full install
of TensorFlow and the rest unpacks ~3 GB and took 1 m 45 s to 2 m 45 s here. The wheel is installed
offline (`--no-index --no-deps`), every runtime requirement it declares is checked against what the
new environment sees, and the tests prove that `miscnn_lite` is imported from the new environment.
`MISCNN_WHEEL_FULL_INSTALL=1` installs the dependencies for real instead (pip's configured indexes
and find-links).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from miscnn_lite.experiments import bundle_differences

ROOT = Path(__file__).resolve().parents[1]
TIMES = {}
# one fold (a hold-out split), two steps, no tumor rule (it is chosen on the other folds' predictions)
TINY = dict(n_cases=4, fold_scheme="split", epochs=1, iterations=2, phantom_shape="[24,48,48]",
            patch_shape="[16,32,32]",
            base_filters=4, depth=2, analysis_mode="3d", batch_size=2, n_test_cases=0,
            tumor_min_fractions="[0]", tumor_largest_only="[false]")


def _run(cmd, timeout=600, **kwargs):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert r.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _timed(name, cmd, **kwargs):
    start = time.monotonic()
    r = _run(cmd, **kwargs)
    TIMES[name] = round(time.monotonic() - start, 1)
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    "The wheel built from the files git knows."
    src = tmp_path_factory.mktemp("source")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():                               # a deleted, not yet committed file is skipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    # the dev environment's setuptools builds offline; without it pip fetches one into an isolated build env
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _timed("wheel build", [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", dist, src])
    [whl] = dist.glob("miscnn_lite-*.whl")
    return whl


def _borrowed_site_packages(folder: Path) -> Path:
    "A folder of links to the development environment's packages, without miscnn_lite itself."
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("miscnn_lite", "__editable__")) or name.endswith(".pth"):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment outside the repository with the wheel installed; yields its bin folder,
    then removes it."""
    root = tmp_path_factory.mktemp("wheel_venv")
    _timed("venv", [sys.executable, "-m", "venv", root / "venv"])
    python = root / "venv" / "bin" / "python"
    if os.environ.get("MISCNN_WHEEL_FULL_INSTALL") == "1":
        _timed("install", [python, "-m", "pip", "install", "-q", wheel], timeout=1800)
    else:
        site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
        (site / "borrowed_dependencies.pth").write_text(str(_borrowed_site_packages(root / "borrowed")) + "\n")
        _timed("install", [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel])
        _run([python, "-c", DEPENDENCIES_SATISFIED])
    yield python.parent
    shutil.rmtree(root, ignore_errors=True)                    # a full install leaves ~3 GB


# pip --no-deps skips the dependency check; this one checks the wheel's own runtime requirements
DEPENDENCIES_SATISFIED = """
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement
missing = []
for text in requires("miscnn-lite"):
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        if not req.specifier.contains(version(req.name), prereleases=True):
            missing.append(f"{req} (found {version(req.name)})")
    except PackageNotFoundError:
        missing.append(f"{req} (not installed)")
assert not missing, f"runtime dependencies not satisfied: {missing}"
"""


def _env(bin_dir: Path) -> dict:
    "The environment of a user who activated the new venv: nothing points at the checkout."
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    return dict(env, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(bin_dir.parent),
                TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture
def user(venv, tmp_path):
    "Run a command as the user would: the new venv first on PATH, in an empty folder."
    empty = tmp_path / "empty"
    empty.mkdir()
    return lambda *cmd, **kw: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=empty,
                                             env=_env(venv), timeout=kw.get("timeout", 600)), empty


def test_wheel_holds_the_package_and_the_bundle_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("miscnn_lite/", "miscnn_lite-"))]
    assert outside == [], f"the wheel contains files outside the package: {outside}"
    pattern = r"(^|/)(tests?|__pycache__|\.ipynb_checkpoints|\.pytest_cache|results|build)/|\.pyc$"
    unwanted = [n for n in names if re.search(pattern, n)]
    assert unwanted == [], f"the wheel contains tests, caches or results: {unwanted}"
    for shipped in ["miscnn_lite/cli.py", "miscnn_lite/bundled/_download_kits19.py",
                    "miscnn_lite/bundled/experiments/kits19_cv.ipynb",
                    "miscnn_lite/bundled/experiments/presets/ct_cues.yaml",
                    "miscnn_lite/bundled/tutorials/01_quickstart.ipynb",
                    "miscnn_lite/bundled/tutorials/solutions/09_ct_cues.ipynb"]:
        assert shipped in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    runtime = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert runtime and not [line for line in runtime if "torch" in line], \
        "torch (a multi-GB CUDA build) must stay optional"


def test_bundle_equals_the_repository():
    assert bundle_differences(ROOT) == [], \
        "miscnn_lite/bundled/ differs from the repository copies: run make bundle and commit"


def test_installed_bundle_equals_the_repository(venv):
    site = Path(_run([venv / "python", "-c",
                      "import miscnn_lite, pathlib; print(pathlib.Path(miscnn_lite.__file__).parent)"],
                     env=_env(venv), cwd=venv).stdout.strip())
    assert site.is_relative_to(venv.parent), f"miscnn_lite imported from {site}, not from the new environment"
    assert bundle_differences(ROOT, site / "bundled") == []


def test_import_from_an_empty_folder(user):
    run, empty = user
    r = run("python", "-c", "import miscnn_lite, sys; print(miscnn_lite.__file__); print(sys.prefix)")
    assert r.returncode == 0, r.stderr
    file, prefix = r.stdout.split()
    assert Path(file).is_relative_to(prefix) and "site-packages" in file, r.stdout
    assert not Path(file).is_relative_to(ROOT), r.stdout


def test_phantoms_course_and_download_help(user):
    run, empty = user
    r = run("miscnn-lite", "phantoms", "--out", "ph", "--cases", 2, "--shape", 24, 48, 48, "--quiet")
    assert r.returncode == 0 and (empty / "ph" / "case_00001" / "imaging.nii.gz").exists(), r.stderr
    r = run("miscnn-lite", "course", "course", "--solutions")
    assert r.returncode == 0, r.stderr
    assert len(list((empty / "course").glob("*.ipynb"))) == 11
    assert len(list((empty / "course" / "solutions").glob("*.ipynb"))) == 11
    r = run("miscnn-lite", "download", "kits19", "--help")
    assert r.returncode == 0 and "--cases" in r.stdout, r.stdout + r.stderr
    r = run("miscnn-lite", "download", "kits19", "--cases", "0-1", "--dry-run", "--out",
            "kits")   # plans, fetches nothing
    assert r.returncode == 0 and "case_00001/segmentation.nii.gz" in r.stdout, r.stdout + r.stderr
    r = run("miscnn-lite", "experiment", "--notebook", "kits21_cv")
    assert r.returncode == 2 and "kits19_cv.ipynb" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_tiny_experiment(user):
    run, empty = user
    start = time.monotonic()
    r = run("miscnn-lite", "experiment", "--out", "results", *[a for k, v in TINY.items() for a in ("-p", f"{k}={v}")])
    TIMES["tiny experiment"] = round(time.monotonic() - start, 1)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (empty / "results" / "kits19_cv.ipynb").exists() and (empty / "results" / "metrics.csv").exists()
    print("\nwheel test times (s):", TIMES)
