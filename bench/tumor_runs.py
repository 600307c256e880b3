"""One table row per finished `kits19_cv` run: what it changed from the default and what it scored.

    python bench/tumor_runs.py [--default NAME=VALUE ...] RUN_DIR [RUN_DIR ...]

Reads each run folder's result.json, manifest.json and plan.json (the files `make experiment` writes) and
prints a markdown row: the run's name, the parameters that differ from the notebook's defaults (from the
manifest's config; the loss options from plan.json, so a run of a scratch copy of the notebook is named
by what it trained), the seed, kidney Dice, tumor Dice (before the rule), the test ensemble's tumor
Dice, minutes, the 15-minute load average at the end, and the processor; with `--split` also the tumor
Dice of the tumor-bearing cases alone and the tumor-free cases left with a false tumor, both after the
rule (`tumor_split`). The rows of bench/README.md's "Further tumor levers" table come from here.
`--default NAME=VALUE` compares with a default of the past instead of the notebook's own (that table:
`--default slab_neighbours=2 --default copy_paste=0`, the default it was run against).
"""
import argparse
import ast
import json
from pathlib import Path

from miscnn_lite.experiments import experiments_dir, notebook_parameters

IGNORED = {"data_dir", "out_dir", "seed", "cpu_kernels"}       # where a run lives; seed and kernels get columns
# parameters added after runs were kept, with the value those runs trained with (a config without the key predates it)
PREDATING = {"copy_paste": 0.0, "copy_paste_scale": 1.0, "copy_paste_contrast": 1.0}


def changes(config: dict, plan: dict, defaults: dict) -> str:
    "The parameters of `config` (and loss options of `plan`) that differ from the notebook's defaults."
    config = {**PREDATING, **config}
    diff = [f"{k}={v}" for k, v in config.items()
            if k in defaults and k not in IGNORED and v != defaults[k]]
    if plan.get("loss_options", {}).get("include_background") is False and "dice_background=False" not in diff:
        diff.append("dice_background=False")
    return ", ".join(diff) or "the default"


def read(folder: Path, name: str) -> dict:
    "One of a run folder's JSON files, with a clear error when the run did not finish."
    path = folder / name
    if not path.is_file():
        raise SystemExit(f"{path}: missing. Give the results folder of a finished kits19_cv run.")
    return json.loads(path.read_text(encoding="utf-8"))


def row(folder: Path, defaults: dict, split: bool = False) -> str:
    result, manifest = (read(folder, f"{name}.json") for name in ("result", "manifest"))
    plan = read(folder, "plan.json") if (folder / "plan.json").is_file() else {}   # runs kept in docs/: none
    config = manifest["config"]
    parts = ""
    if split:
        after = result.get("tumor_split", {}).get("after_rule")
        if after is None:
            raise SystemExit(f"{folder / 'result.json'}: no tumor_split (a run from before 2026-12-06); "
                             "leave out --split.")
        parts = (f" {after['tumor_dice_tumor_cases']:.3f} | {after['tumor_free_cases_with_tumor']} of "
                 f"{after['tumor_free_cases']} |")
    test = result.get("test_ensemble_dice")                     # None: a run without test phantoms (sim2real)
    test_tumor = "–" if not test else f"{test['tumor']:.3f}"
    return (f"| {folder.name} | {changes(config, plan, defaults)} | {config['seed']} | "
            f"{config.get('cpu_kernels', 'onednn')} | {result['kidney_dice']:.3f} | {result['tumor_dice']:.3f} "
            f"({result['tumor_dice_before_rule']:.3f}) |{parts} {test_tumor} | "
            f"{result['minutes']} | {result.get('load_average_15min', '')} | {manifest['machine']['cpu']} |")


def notebook_defaults(overrides: list[str] = ()) -> dict:
    "kits19_cv's defaults as Python values, with `NAME=VALUE` overrides (VALUE a Python literal or a word)."
    defaults = {k: ast.literal_eval(v["default"]) for k, v in
                notebook_parameters(experiments_dir() / "kits19_cv.ipynb").items()}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in defaults:
            raise SystemExit(f"--default {item!r}: give NAME=VALUE with NAME a kits19_cv parameter.")
        try:
            defaults[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            defaults[name] = value                                  # a bare word, e.g. augmentation=ct
    return defaults


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--default", action="append", default=[], metavar="NAME=VALUE",
                        help="compare with this value of a parameter instead of the notebook's default")
    parser.add_argument("--split", action="store_true",
                        help="add the tumor Dice of the tumor-bearing cases and the false tumors of tumor-free ones")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args(argv)
    defaults = notebook_defaults(args.default)
    split = " tumor-bearing cases | tumor-free with a false tumor |" if args.split else ""
    print(f"| run | changed from the default | seed | CPU kernels | kidney | tumor (before the rule) |{split} "
          "test ensemble tumor | minutes | load | CPU |")
    print("| --- " * (12 if args.split else 10) + "|")
    for folder in map(Path, args.runs):
        print(row(folder, defaults, args.split))


if __name__ == "__main__":
    main()
