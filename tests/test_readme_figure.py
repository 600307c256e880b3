"""data_scripts/make_readme_figure.py: the README picture is reproduced byte for byte; other formats and bad options."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_scripts" / "make_readme_figure.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_readme_picture_is_reproduced(tmp_path):
    r = run("--out", tmp_path / "sub" / "phantom.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sub" / "phantom.png").read_bytes() == (ROOT / "docs" / "phantom.png").read_bytes()
    assert run("--out", tmp_path / "phantom.svg").returncode == 0
    assert (tmp_path / "phantom.svg").read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom.svg", "sub"]       # no temporary file left


def test_bad_options_are_named(tmp_path):
    for args, said in ((("--out", tmp_path / "phantom"), "--out"), (("--out", tmp_path / "p.jpg"), ".png, .pdf, .svg"),
                       (("--seed", -1, "--out", tmp_path / "p.png"), "--seed -1")):
        r = run(*args)
        assert r.returncode == 2 and said in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())
