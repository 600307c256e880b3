"""Post-hoc levers for the tumor score of a finished `kits19_cv` run, measured on its own fold models.

    python bench/tumor_levers.py results/                       # all variants and tumor weights
    python bench/tumor_levers.py results/ --variants plain --weights 1   # reproduces the run's result.json

For every fold model and its validation cases it computes the class probabilities once per
test-time mirroring variant (`plain`: none; `mirror2`: left-right; `mirror12`: left-right and
front-back, 4 members), then scores label maps made with a weight on the tumor probability
(argmax of p · [1, 1, w]), the run's kidney post-processing (two largest kidney+tumor components)
and every candidate tumor rule of the default experiment. As in the notebook, the tumor rule (and,
in the last line per variant, the weight) is chosen for each fold on the other folds' cases.
Prints one line per variant and weight; writes the per-case scores to <run>/tumor_levers/.
Assumes the default parameters `postprocess="kidneys"`, `tumor_min_volumes=[0]`.

`--component-rules` also scores, on the plain probabilities, two rules that read the tumor probability
of each predicted tumor component (before the size rule, which is still chosen with them): dropping the
components whose mean tumor probability is under a threshold (`drop_unsure_tumor`), and growing each
component into the kidney voxels connected to it whose tumor probability is over a low threshold
(`grow_tumor`, hysteresis thresholding).
"""
import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from miscnn_lite.evaluation import absorb_components, evaluate_case, keep_largest_components  # noqa: E402
from miscnn_lite.io import open_dataset  # noqa: E402

VARIANTS = {"plain": (), "mirror2": (2,), "mirror12": (1, 2)}
FRACTIONS = (0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)       # the default tumor_min_fractions
RULES = [dict(largest_only=b, min_fraction=f) for b in (False, True) for f in FRACTIONS]
CONFIDENCES = (0.5, 0.6, 0.7, 0.8, 0.9)                     # drop_unsure_tumor thresholds
LOW_THRESHOLDS = (0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)    # grow_tumor thresholds


def tumor_rule(label_map, case, rule: dict):
    "The notebook's rule: tumor components but the largest, then those below a fraction of kidney+tumor, become kidney."
    return absorb_components(label_map, label=2, into=1, spacing=case.spacing, fraction_of=(1, 2), **rule)


def drop_unsure_tumor(label_map, tumor_probability, threshold: float):
    "Tumor components whose mean tumor probability is under `threshold` become kidney."
    components, n = ndimage.label(label_map == 2)
    if n == 0:
        return label_map
    mean = np.asarray(ndimage.mean(tumor_probability, components, np.arange(1, n + 1)))
    out = label_map.copy()
    out[np.isin(components, np.flatnonzero(mean < threshold) + 1)] = 1
    return out


def grow_tumor(label_map, tumor_probability, low: float):
    "Hysteresis: kidney+tumor voxels with tumor probability over `low` that connect to a tumor voxel become tumor."
    components, _ = ndimage.label((tumor_probability > low) & (label_map > 0))
    seeded = np.unique(components[(label_map == 2) & (components > 0)])
    out = label_map.copy()
    out[np.isin(components, seeded)] = 2
    return out


def save_probabilities(run: Path, folds: list, reader, variants, where: Path) -> None:
    "float16 probabilities of every validation case per variant (kept; a rerun reuses them)."
    from miscnn_lite.training import Segmenter
    for k, fold in enumerate(folds):
        for name in variants:
            if all((where / name / f"{cid}.npy").exists() for cid in fold["val"]):
                continue
            seg = Segmenter.load(run / f"fold_{k}" / "model", mirror_axes=VARIANTS[name])
            started = time.time()
            for cid in fold["val"]:
                path = where / name / f"{cid}.npy"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, seg.predict_probabilities(reader.load_case(cid)).astype(np.float16))
            print(f"fold {k} {name}: {time.time() - started:.1f} s", flush=True)


def score(reader, fold_of: dict, variants, weights, where: Path, edits=None) -> pd.DataFrame:
    """Kidney and tumor Dice per case, variant, tumor weight and candidate rule; with `edits` ({name:
    function(label map, tumor probability) -> label map}), per edit applied before the rule instead."""
    rows = []
    for name in variants:
        for cid, k in fold_of.items():
            case = reader.load_case(cid)
            p = np.load(where / name / f"{cid}.npy").astype(np.float32)
            for w in weights:
                m = np.argmax(p * np.array([1, 1, w], np.float32), axis=-1).astype(np.uint8)
                m = keep_largest_components(m, labels={"kidneys": (1, 2)}, keep=2)
                for edit, change in (edits or {"none": lambda m, _: m}).items():
                    edited = change(m, p[..., 2])
                    for i, rule in enumerate(RULES):
                        t = evaluate_case(case.label, tumor_rule(edited, case, rule), case.spacing,
                                          {"kidney": 1, "tumor": 2}, ["DICE"], case_id=cid, require_labels=False)
                        d = dict(zip(t.label, t.value))
                        rows.append(dict(variant=name, w=w, edit=edit, rule=i, case=cid, fold=k, kidney=d["kidney"],
                                         tumor=d["tumor"]))
    return pd.DataFrame(rows)


def chosen_on_other_folds(table: pd.DataFrame, keys: list, n_folds: int) -> tuple[float, float]:
    "Mean kidney and tumor Dice when `keys` are chosen per fold by the best mean tumor Dice of the other folds."
    picked = []
    for k in range(n_folds):
        best = table[table.fold != k].groupby(keys).tumor.mean().idxmax()
        best = best if isinstance(best, tuple) else (best,)
        mine = table[table.fold == k]
        for key, value in zip(keys, best):
            mine = mine[mine[key] == value]
        picked.append(mine)
    picked = pd.concat(picked)
    return picked.kidney.mean(), picked.tumor.mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path,
                    help="results folder of a finished kits19_cv run (phantoms/, folds.json, fold_K/)")
    ap.add_argument("--variants", default="plain,mirror2,mirror12", help="comma-separated: plain, mirror2, mirror12")
    ap.add_argument("--weights", default="1,1.5,2,3", help="comma-separated weights on the tumor probability")
    ap.add_argument("--component-rules", action="store_true",
                    help="also score drop_unsure_tumor and grow_tumor on the plain probabilities")
    a = ap.parse_args()
    variants = a.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}.")
    weights = [float(w) for w in a.weights.split(",")]
    if not (a.run / "folds.json").is_file() or not (a.run / "phantoms").is_dir():
        raise SystemExit(f"{a.run}: no folds.json or phantoms/; give the results folder of a finished kits19_cv run "
                         "on phantoms (make experiment writes results/).")
    reader = open_dataset(a.run / "phantoms")
    folds = json.loads((a.run / "folds.json").read_text())["folds"]
    fold_of = {cid: k for k, fold in enumerate(folds) for cid in fold["val"]}
    where = a.run / "tumor_levers"
    save_probabilities(a.run, folds, reader, variants, where)
    table = score(reader, fold_of, variants, weights, where)
    table.to_csv(where / "scores.csv", index=False)
    for name in variants:
        for w in weights:
            sub = table[(table.variant == name) & (table.w == w)]
            before = sub[sub.rule == 0]
            kidney, tumor = chosen_on_other_folds(sub, ["rule"], len(folds))
            print(f"{name:9s} tumor weight {w:<4g} before the rule: kidney {before.kidney.mean():.4f} tumor "
                  f"{before.tumor.mean():.4f} | rule chosen on the other folds: kidney {kidney:.4f} tumor {tumor:.4f}")
        kidney, tumor = chosen_on_other_folds(table[table.variant == name], ["w", "rule"], len(folds))
        print(f"{name:9s} weight and rule chosen on the other folds: kidney {kidney:.4f} tumor {tumor:.4f}")
    if a.component_rules:
        component_rules(reader, fold_of, len(folds), where)


def component_rules(reader, fold_of: dict, n_folds: int, where: Path) -> None:
    "One line per threshold of drop_unsure_tumor and grow_tumor, then each family chosen with the rule per fold."
    edits = {"none": lambda m, _: m,
             **{f"drop {t}": lambda m, p, t=t: drop_unsure_tumor(m, p, t) for t in CONFIDENCES},
             **{f"grow {t}": lambda m, p, t=t: grow_tumor(m, p, t) for t in LOW_THRESHOLDS}}
    table = score(reader, fold_of, ["plain"], [1.0], where, edits)
    table.to_csv(where / "component_rule_scores.csv", index=False)
    for edit in edits:
        sub = table[table.edit == edit]
        kidney, tumor = chosen_on_other_folds(sub, ["rule"], n_folds)
        print(f"plain {edit:9s} before the rule: tumor {sub[sub.rule == 0].tumor.mean():.4f} | "
              f"rule chosen on the other folds: kidney {kidney:.4f} tumor {tumor:.4f}")
    for family in ("drop", "grow"):
        sub = table[(table.edit == "none") | table.edit.str.startswith(family)]
        kidney, tumor = chosen_on_other_folds(sub, ["edit", "rule"], n_folds)
        print(f"plain {family} threshold and rule chosen on the other folds: kidney {kidney:.4f} tumor {tumor:.4f}")


if __name__ == "__main__":
    main()
