"""Epoch-start stall benchmark: `Segmenter.fit` with one loader worker vs. two (the default).

With `workers=1`, Keras hands a `PyDataset` to TensorFlow as a generator dataset with AUTOTUNE
prefetching, and a new iterator is made every epoch. On the 2-core development machine the first
step of some epochs then waited 5–9 s before the first batch was even requested (a C-level wait
inside the iterator; the batch itself takes ~10 ms). With `workers >= 2` Keras's own
`OrderedEnqueuer` prefetches in threads and TensorFlow's prefetching is switched off; the stall
was not seen. The batches are the same either way (they are seeded per epoch and index).

epoch_time_ratio = median epoch time with workers=1 / with workers=2 per round, median over rounds (each round
one fit of each setting, side by side, in alternating order), the same 2.5D U-Net, data and seeds as the default
`kits19_cv` experiment (smaller with --quick); also printed: how many epochs had a first step above 1 s. The stall
is intermittent, so the ratio varies from run to run.

Usage: python bench/epoch_start.py [--quick] [--rounds N]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np

from miscnn_lite import models
from miscnn_lite.cli import _positive_int  # a count >= 1, as the CLI parses it
from miscnn_lite.io import open_dataset
from miscnn_lite.loading import ReaderItem
from miscnn_lite.patching import PatchSampler
from miscnn_lite.phantoms import make_phantom_dataset
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.training import Segmenter


class FirstStep(keras.callbacks.Callback):
    "Per epoch: seconds to the end of the first step, and the whole epoch."
    def __init__(self):
        super().__init__()
        self.first, self.total = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.seen = time.perf_counter(), False

    def on_train_batch_end(self, batch, logs=None):
        if not self.seen:
            self.first.append(time.perf_counter() - self.t0)
            self.seen = True

    def on_epoch_end(self, epoch, logs=None):
        self.total.append(time.perf_counter() - self.t0)


def run(reader, workers, epochs, iterations, out):
    keras.utils.set_random_seed(0)
    net = models.slice_model(models.unet(3, in_channels=5, ndim=2, depth=4, base_filters=16, normalization="instance"))
    seg = Segmenter(net, Pipeline([ClipHU(-79, 304), ZScore(mode="dataset", seed=0)]),
                    sampler=PatchSampler((1, 64, 64), foreground_fraction=0.7, slab_neighbours=2),
                    learning_rate=3e-3, batch_size=8, iterations=iterations, workers=workers, seed=0)
    timer = FirstStep()
    items = [ReaderItem(reader, c) for c in reader.case_ids]
    seg.fit(items[:-2], items[-2:], epochs=epochs, out=out, callbacks=[timer])
    return np.array(timer.first[1:]), np.array(timer.total[1:])      # epoch 1 also traces the step


def main():
    ap = argparse.ArgumentParser(description="Epoch time of Segmenter.fit with one loader worker vs. two.")
    ap.add_argument("--quick", action="store_true", help="fewer cases, epochs and steps (the tests' size)")
    ap.add_argument("--rounds", type=_positive_int, default=3,
                    help="interleaved rounds, each one fit per setting, in alternating order (default 3)")
    args = ap.parse_args()
    epochs, iterations, n_cases = (3, 30, 8) if args.quick else (5, 70, 16)
    results, ratios = {1: ([], []), 2: ([], [])}, []
    with tempfile.TemporaryDirectory() as d:
        reader = open_dataset(make_phantom_dataset(Path(d) / "phantoms", n_cases=n_cases, seed=0, progress=False))
        for r in range(args.rounds):           # side by side: one fit of each per round, which goes first alternating
            medians = {}
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                first, total = run(reader, w, epochs, iterations, Path(d) / f"round{r}_w{w}")
                results[w][0].extend(first)
                results[w][1].extend(total)
                medians[w] = float(np.median(total))
            ratios.append(medians[1] / medians[2])
    for w, (first, total) in results.items():
        first, total = np.array(first), np.array(total)
        print(f"workers={w}: median epoch {np.median(total):.2f} s, first step {np.median(first):.2f} s median / "
              f"{first.max():.2f} s max, epochs with a first step > 1 s: {(first > 1).sum()} of {len(first)}")
    print(f"epoch_time_ratio: {np.median(ratios):.2f} (median over {len(ratios)} interleaved rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
