"""How optimistic is it to score each fold with the weights of its best validation epoch?

    python bench/best_epoch_bias.py RUN_DIR [RUN_DIR ...]

`kits19_cv` keeps, per fold, the weights of the epoch with the lowest validation loss (`best.keras`), and
those validation cases are the ones the fold is then scored on: the choice of epoch has seen them. For each
fold of a run (`RUN_DIR/fold_K/model` with its `checkpoint/`, which keeps the last epoch), this script
predicts the fold's validation cases again with the weights of the **last** epoch (chosen by nothing) and
scores them as the run did (its `postprocess` choice, `kidney_opening` and `grow_steps`:
`evaluation.postprocess_kidneys`; no tumor rule, as `metrics.csv`), beside the run's own scores with the
best epoch's weights. Prints one row per fold and label (best epoch, last epoch, mean Dice with each) and
the mean over the folds; the difference is the bias of the selection on that run.
"""
import argparse
import json
from pathlib import Path

import pandas as pd
from sim2real_components import run_postprocessing  # bench/, on sys.path when a script runs

from miscnn_lite.evaluation import evaluate_case, postprocess_kidneys
from miscnn_lite.io import open_dataset
from miscnn_lite.training import (
    CHECKPOINT_DIR,
    LOG_FILE,
    Segmenter,
    _load_checkpoint_weights,
    read_checkpoint_state,
    read_log,
)
from miscnn_lite.validation import FOLD_FILE


def fold_scores(run: Path, k: int, reader, post: dict) -> pd.DataFrame:
    "Mean Dice per label of fold k's validation cases: the run's (best epoch) and again with the last epoch."
    fold_dir, model_dir = run / f"fold_{k}", run / f"fold_{k}" / "model"
    fold = json.loads((fold_dir / FOLD_FILE).read_text())
    log, state = read_log(model_dir / LOG_FILE), read_checkpoint_state(model_dir)
    if state is None:
        raise SystemExit(f"{model_dir}: no checkpoint state; the last epoch's weights are not kept there.")
    seg = Segmenter.load(model_dir)
    _load_checkpoint_weights(seg.model, model_dir / CHECKPOINT_DIR / state["weights"])
    rows = []
    for case_id in fold["val"]:
        case = reader.load_case(case_id)
        prediction = postprocess_kidneys(seg.predict_case(case), case.image, **post)
        rows.append(evaluate_case(case.label, prediction, case.spacing, fold.get("labels"), ["DICE"],
                                  case_id=case_id, require_labels=False))
    last = pd.concat(rows).groupby("label")["value"].mean()
    saved = pd.read_csv(fold_dir / "metrics.csv", dtype={"case": str})
    best = saved[saved["metric"] == "DICE"].groupby("label")["value"].mean()
    best_epoch = int(log.loc[log["val_loss"].idxmin(), "epoch"])
    return pd.DataFrame({"fold": k, "label": best.index, "best_epoch": best_epoch, "last_epoch": int(state["epoch"]),
                         "dice_best_epoch": best.values, "dice_last_epoch": last.reindex(best.index).values})


def main(runs: list[str]) -> pd.DataFrame:
    tables = []
    for run in map(Path, runs):
        if not (run / "manifest.json").is_file():
            raise SystemExit(f"{run}: no manifest.json; give the results folder of a kits19_cv run (make experiment "
                             "writes results/).")
        config = json.loads((run / "manifest.json").read_text())["config"]
        reader = open_dataset(config.get("data_dir") or run / "phantoms")
        post = run_postprocessing(run)
        folds = sorted(int(p.name.split("_")[1]) for p in run.glob("fold_*") if (p / "model").is_dir())
        table = pd.concat([fold_scores(run, k, reader, post) for k in folds], ignore_index=True)
        table.insert(0, "run", run.name)
        tables.append(table)
        print(table.round(4).to_string(index=False))
        mean = table.groupby("label")[["dice_best_epoch", "dice_last_epoch"]].mean()
        for label, row in mean.iterrows():
            print(f"{run.name} {label}: best epoch {row['dice_best_epoch']:.4f}, last epoch "
                  f"{row['dice_last_epoch']:.4f}, bias {row['dice_best_epoch'] - row['dice_last_epoch']:+.4f}")
    return pd.concat(tables, ignore_index=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="kits19_cv result folders with their fold models")
    main(parser.parse_args().runs)
