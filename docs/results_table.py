"""The README's results table, written from run files, never typed by hand.

    python docs/results_table.py results/                 # keep that run's result.json + manifest.json
                                                           # in docs/runs/, then rewrite the tables
    python docs/results_table.py                          # rewrite the tables from docs/runs/ alone
    python docs/results_table.py --check                  # exit 1 if a table differs from docs/runs/

A run is kept as docs/runs/seed<S>_<cpu_kernels>/, with _avx2 (or _no-avx) appended when its
processor had no AVX-512 (a newer run of the same seed, kernels and instruction set replaces it).
The table goes between `<!-- results-table:start -->` and `<!-- results-table:end -->` in README.md
and bench/README.md; `tests/test_results_table.py` runs `--check`.
Runs that scored the real CT (`real_ct_test`, e.g. the sim2real preset) are kept as
docs/runs/sim2real_seed<S>_<phase>_<augmentation>_<phantom shape>[_<spacing>mm][_pelvis|_adultpelvis][_myosteatosis<M>]
[_distractors<N>][_bowel<N>][_kidneys<K>][_cases<N>][_context][_patch<H>x<W>][_batch<B>][_slab<N>][_open<R>][_grow<N>]
[_pair][_ema<M>][_epochs<N>][_deep_supervision]/
and go into a second table, between
`<!-- sim2real:start -->` and `<!-- sim2real:end -->` in bench/README.md (the README summarises it).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"
TARGETS = [ROOT / "README.md", ROOT / "bench" / "README.md"]
SIM_TARGETS = [ROOT / "bench" / "README.md"]     # the attempts' table is long: the README summarises it
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
SIM_START, SIM_END = "<!-- sim2real:start -->", "<!-- sim2real:end -->"
GOALS = {"kidney_dice": 0.92, "tumor_dice": 0.65}
REAL_CT_GOAL = 0.80          # kidney Dice on the real CT of a model trained on phantoms only
VERSIONS = ("tensorflow", "keras", "numpy")


def read_run(folder: Path) -> dict:
    "result.json and manifest.json of a results folder, with a clear error when either is missing."
    run = {}
    for name in ("result", "manifest"):
        path = folder / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing. Give the results folder of a finished kits19_cv run "
                             "(make experiment writes results/).")
        run[name] = json.loads(path.read_text(encoding="utf-8"))
    return run


def run_name(run: dict) -> str:
    config = run["manifest"]["config"]
    if config.get("real_ct_test"):
        shape = "x".join(map(str, config.get("phantom_shape") or ["default"]))
        ds = "_deep_supervision" if config.get("deep_supervision") else ""     # runs before 2026-12-04: none
        pelvis = ("_adultpelvis" if _adult_pelvis(config) else "_pelvis") if _reaches_pelvis(config) else ""
        spacing = config.get("phantom_spacing")                          # the kept runs before 2026-12-04: 3 mm
        mm = "" if spacing in (None, [3.0, 3.0, 3.0], [3, 3, 3]) else "_" + "x".join(f"{v:g}" for v in spacing) + "mm"
        fat = config.get("phantom_myosteatosis") or 0                   # runs before the option: healthy muscle
        fat = f"_myosteatosis{fat:g}" if fat else ""
        fat += f"_distractors{config['phantom_distractors']}" if config.get("phantom_distractors") else ""
        fat += f"_bowel{config['phantom_perirenal_bowel']}" if config.get("phantom_perirenal_bowel") else ""
        fat += "" if _kidney_scale(config) == 1 else f"_kidneys{_kidney_scale(config):g}"
        fat += "" if config.get("n_cases", 48) == 48 else f"_cases{config['n_cases']}"   # every kept run before: 48
        fat += "_context" if config.get("phantom_context") else ""           # organ classes around the kidneys
        patch, batch = _patches(config)
        fat += "" if patch == [64, 64] else "_patch" + "x".join(map(str, patch))
        fat += "" if batch == 8 else f"_batch{batch}"
        fat += "" if _slab(config) == 5 else f"_slab{_slab(config)}"
        fat += f"_open{config['kidney_opening']}" if config.get("kidney_opening") else ""   # runs before: none
        fat += f"_grow{config['grow_steps']}" if config.get("grow_steps") else ""   # runs before the option: none
        fat += "_pair" if config.get("postprocess") == "kidney_pair" else ""     # runs before 2026-12-06: none
        fat += f"_ema{config['ema_momentum']:g}" if config.get("ema_momentum") else ""
        fat += "" if config.get("epochs", 14) == 14 else f"_epochs{config['epochs']}"   # every kept run before: 14
        return (f"sim2real_seed{config['seed']}_{config.get('contrast_phase', 'venous')}_"
                f"{config.get('augmentation')}_{shape}{mm}{pelvis}{fat}{ds}")
    isa = instruction_set(run["manifest"])
    return f"seed{config['seed']}_{config.get('cpu_kernels', 'onednn')}" + ("" if isa == "avx512" else f"_{isa}")


def _patches(config: dict) -> tuple[list[int], int]:
    "The run's in-plane patch [h, w] and batch size (every kept run before the options: [64, 64] and 8)."
    return list(config.get("patch_shape") or [1, 64, 64])[-2:], config.get("batch_size", 8)


def _slab(config: dict) -> int:
    "Slices per 2.5D input slab (the sim2real runs before 2026-12-05: 5); 5 for other modes, so no name changes."
    return 2 * config.get("slab_neighbours", 2) + 1 if config.get("analysis_mode", "2.5d") == "2.5d" else 5


def _adult_pelvis(config: dict) -> bool:
    "Whether the run's phantoms have the adult pelvis (`phantom_pelvis`; runs before the option: simple)."
    return config.get("phantom_pelvis", "simple") == "adult"


def _kidney_scale(config: dict) -> float:
    "The run's `phantom_kidney_scale` (runs before the option: 1, kidneys as drawn)."
    return config.get("phantom_kidney_scale") or 1


def _reaches_pelvis(config: dict) -> bool:
    "Whether the run's phantoms reach below the abdomen (`phantom_fov_z` below -1; runs before it: no)."
    return (config.get("phantom_fov_z") or [-1, 1])[0] < -1


def instruction_set(manifest: dict) -> str:
    """The widest vector instruction set the run's CPU had ('avx512', 'avx2' or 'no-avx'), the property
    that picks oneDNN's kernels. Runs on AVX-512 machines keep the plain name seed<S>_<kernels>."""
    flags = (manifest.get("machine") or {}).get("cpu_flags")
    if flags is None or "avx512f" in flags:           # unknown: the machines of the first kept runs
        return "avx512"
    return "avx2" if "avx2" in flags else "no-avx"


def keep_run(folder: Path) -> Path:
    "Copy a run's result.json and manifest.json into docs/runs/<name>/ (atomically)."
    run = read_run(folder)
    target = RUNS / run_name(run)
    RUNS.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=RUNS, prefix=".staging_"))
    for name in ("result.json", "manifest.json"):
        shutil.copyfile(folder / name, staging / name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _dice(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(runs: list[dict]) -> str:
    "The markdown block: one row per run, the spread, the goals met, the machines and versions."
    if not runs:
        return "_No run kept yet: `python docs/results_table.py results/` after `make experiment`._"
    rows = ["| run | seed | CPU kernels | CPU | kidney Dice | tumor Dice | tumor before rule | kidney+tumor | "
            "test ensemble kidney / tumor | minutes | load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        r, config = run["result"], run["manifest"]["config"]
        test = r.get("test_ensemble_dice") or {}
        rows.append(f"| {run_name(run)} | {config['seed']} | {config.get('cpu_kernels', 'onednn')} | "
                    f"{instruction_set(run['manifest'])} | {_dice(r['kidney_dice'])} | {_dice(r['tumor_dice'])} | "
                    f"{_dice(r.get('tumor_dice_before_rule'))} | "
                    f"{_dice(r['kidney+tumor_dice'])} | {_dice(test.get('kidney'))} / {_dice(test.get('tumor'))} | "
                    f"{r['minutes']} | {r.get('load_average_15min', '–')} |")
    lines = ["\n".join(rows), ""]
    for key, goal in GOALS.items():
        values = [run["result"][key] for run in runs]
        met = sum(v >= goal for v in values)
        lines.append(f"- {key.replace('_', ' ')}: {min(values):.3f}–{max(values):.3f} over {len(runs)} run(s) "
                     f"(spread {max(values) - min(values):.3f}); goal ≥ {goal} met by {met} of {len(runs)}")
    lines.append(_machines_line(runs))
    lines.append("- load: the machine's 15-minute load average at the end of the run; the run's own threads keep "
                 "it at 1.0–2.5 on the 2 cores when nothing else runs beside it (eigen kernels at the top of that "
                 "range); well above 2.5 the cores were shared and the minutes are inflated, the Dice values are not")
    return "\n".join(lines)


def sim2real_table(runs: list[dict]) -> str:
    "The markdown block of the runs that scored the real CT: one row per attempt, the goal, the machines."
    if not runs:
        return "_No sim2real run kept yet: `python docs/results_table.py results/sim2real` after the preset._"
    rows = ["| run | phantoms | contrast phase | augmentation | phantom CV kidney+tumor Dice | real CT kidney Dice | "
            "real CT HD95 (mm) | kidney HU median real / phantoms | minutes | load | CPU |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        r, config = run["result"], run["manifest"]["config"]
        real, hu = r["real_ct"], r["real_ct"].get("kidney_hu_p10_p50_p90", {})
        phantoms = f"{config['n_cases']} × {config.get('phantom_shape')} at {config.get('phantom_spacing')} mm"
        if _reaches_pelvis(config):
            phantoms += f", z {config['phantom_fov_z']} (with {'adult ' if _adult_pelvis(config) else ''}pelvis)"
        if config.get("phantom_myosteatosis"):
            phantoms += f", fatty muscle up to {config['phantom_myosteatosis']:g}"
        if config.get("phantom_distractors"):
            phantoms += f", {config['phantom_distractors']} decoys each"
        if config.get("phantom_perirenal_bowel"):
            phantoms += f", {config['phantom_perirenal_bowel']} bowel loops against the kidneys"
        if _kidney_scale(config) != 1:
            phantoms += f", kidneys × {_kidney_scale(config):g}"
        if config.get("phantom_context"):
            phantoms += ", liver/spleen/muscle/bowel/bladder trained as classes"
        if _patches(config) != ([64, 64], 8):
            phantoms += f", patches {config['patch_shape']} × {_patches(config)[1]}"
        if _slab(config) != 5:
            phantoms += f", {_slab(config)}-slice slabs"
        if config.get("target_spacing"):
            phantoms += f", resampled to {config['target_spacing']} mm"
        if config.get("kidney_opening"):
            phantoms += f"; kidney components counted after an opening of {config['kidney_opening']} voxel(s)"
        if config.get("grow_steps"):
            phantoms += f"; kidneys grown {config['grow_steps']} voxel layer(s) within their HU"
        if config.get("postprocess") == "kidney_pair":
            phantoms += "; kidneys kept as a left-right pair at one height"
        if config.get("ema_momentum"):
            phantoms += f"; moving average of the weights ({config['ema_momentum']:g})"
        if config.get("epochs", 14) != 14:
            phantoms += f"; {config['epochs']} epochs of {config.get('iterations')} steps"
        rows.append(f"| {run_name(run)} | {phantoms} | {config.get('contrast_phase', 'venous')} | "
                    f"{config.get('augmentation')} | {_dice(r['kidney+tumor_dice'])} | {_dice(real['DICE'])} | "
                    f"{real['HDRFDST95']:.1f} | {hu.get('real_ct', ['–'] * 3)[1]} / "
                    f"{hu.get('training_cases', ['–'] * 3)[1]} | {r['minutes']} | {r.get('load_average_15min', '–')} | "
                    f"{_cpu_short(run['manifest'])} |")
    met = sum(run["result"]["real_ct"]["DICE"] >= REAL_CT_GOAL for run in runs)
    return "\n".join(["\n".join(rows), "",
                      f"- goal: real CT kidney Dice ≥ {REAL_CT_GOAL} (trained on phantoms only), met by {met} of "
                      f"{len(runs)}; the reference is TotalSegmentator's kidney label, not a manual one. Every "
                      "attempt is scored on this one scan and the preset's levers were kept or dropped by that "
                      "score (pelvis, fatty muscle, slabs, growth, opening, the pair rule, averaged weights): the "
                      "best rows are tuned on their test scan",
                      "- phantom CV kidney+tumor Dice: kidney and tumor merged, mean over the folds (as on the real "
                      "CT)",
                      _machines_line(runs)])


def _cpu_short(manifest: dict) -> str:
    "The processor's maker and family: the kernels oneDNN picks, and so the run's floats, follow it."
    cpu = (manifest.get("machine") or {}).get("cpu") or "unknown"
    return next((name for key, name in (("EPYC", "AMD EPYC"), ("Xeon", "Intel Xeon")) if key in cpu), cpu)


def _machines_line(runs: list[dict]) -> str:
    machines = sorted({_machine(run["manifest"]) for run in runs})
    return f"- machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}"


def _machine(manifest: dict) -> str:
    m = manifest.get("machine") or {}
    versions = ", ".join(f"{k} {manifest['versions'].get(k)}" for k in VERSIONS)
    commit = (manifest.get("git_commit") or "unknown")[:7]
    flags = " ".join(m.get("cpu_flags") or [])
    return f"{m.get('cpu', 'unknown CPU')} ({m.get('cores', '?')} cores; {flags or 'no'} kernel flags), " \
           f"{versions}, commit {commit}"


def kept_runs() -> list[dict]:
    return [read_run(folder) for folder in sorted(RUNS.iterdir()) if folder.is_dir()
            and not folder.name.startswith(".")] if RUNS.is_dir() else []


def with_table(text: str, block: str, path: Path, start: str = START, end: str = END) -> str:
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{path}: needs one {start} and one {end} line around the table.")
    head, rest = text.split(start)
    return f"{head}{start}\n{block}\n{end}{rest.split(end)[1]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="results folders of kits19_cv runs to keep")
    p.add_argument("--check", action="store_true", help="only check that the tables match docs/runs/")
    args = p.parse_args(argv)
    for folder in args.runs:
        print(f"kept {keep_run(folder)}")
    runs = kept_runs()
    block = table([run for run in runs if not run["manifest"]["config"].get("real_ct_test")])
    sim_block = sim2real_table([run for run in runs if run["manifest"]["config"].get("real_ct_test")])
    stale = []
    for path in TARGETS:
        text = path.read_text(encoding="utf-8")
        new = with_table(text, block, path)
        if path in SIM_TARGETS:
            new = with_table(new, sim_block, path, SIM_START, SIM_END)
        if new != text:
            stale.append(path)
            if not args.check:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(new, encoding="utf-8")
                os.replace(tmp, path)
    if args.check and stale:
        print(f"{', '.join(map(str, stale))}: the results table differs from docs/runs/; "
              "run python docs/results_table.py and commit.", file=sys.stderr)
        return 1
    if not args.check:                           # a check that passes prints nothing
        print(block, sim_block, sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
