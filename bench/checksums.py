"""Cost of the content checksums (issue 19) against one training epoch, measured side by side on CPU.

1. checkpoint_checksum_s: SHA-256 of one epoch's checkpoint files (weights .h5 + optimizer .npz) of
   the command line's default U-Net (depth 4, 16 base filters), which `EpochCheckpoint` adds per epoch.
2. cache_crc_s_per_case: streamed CRC-32 of one cached case (`verify_npy(full=True)`, now the default)
   minus the header-only check, for a 128×256×256 float32 image + uint8 label (a KiTS19 case at
   3.22×1.62×1.62 mm is about this size). It runs once per `fit`, not per epoch.
3. epoch_estimate_s: `TRAIN_DEFAULTS` epoch = 50 steps × the median `train_on_batch` time of that model
   on (2, 32, 64, 64, 1) patches.
4. checksum_fraction_per_epoch = (checkpoint checksums + the cache CRC of `--cases` cases spread over
   `--epochs` epochs) / epoch. Goal <= 0.05.

Usage: python bench/checksums.py [--quick]; ends with one `name: value` line per figure.
"""
import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from loading import median_time  # bench/loading.py (this folder is on sys.path when run as a script)

from miscnn_lite.cli import _positive_int  # a count >= 1, as the CLI parses it


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller model and volume (a smoke run)")
    parser.add_argument("--cases", type=_positive_int, default=210, help="cases whose cache is verified once per fit")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="epochs of one fit (TRAIN_DEFAULTS: 10)")
    args = parser.parse_args()
    import keras

    from miscnn_lite.loading import file_fingerprint, verify_npy, write_npy
    from miscnn_lite.losses import get_loss
    from miscnn_lite.models import unet
    from miscnn_lite.training import _optimizer_arrays

    depth, base, patch, volume = (2, 4, (16, 32, 32), (32, 64, 64)) if args.quick else (4, 16, (32, 64, 64), (128,
                                                                                                              256, 256))
    tmp = Path(tempfile.mkdtemp(prefix="bench_checksums_"))
    atexit.register(shutil.rmtree, tmp, True)    # ~150 MB at full size: removed however the script ends
    model = unet(3, depth=depth, base_filters=base)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice_ce"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *patch, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, (2, *patch)), 3).astype("float32")
    model.train_on_batch(x, y)                                           # build + compile
    step = median_time(lambda: model.train_on_batch(x, y), 3)
    epoch = 50 * step

    model.save_weights(tmp / "w.weights.h5")
    np.savez(tmp / "o.npz", **_optimizer_arrays(model.optimizer))
    ckpt = median_time(lambda: [file_fingerprint(tmp / "w.weights.h5"), file_fingerprint(tmp / "o.npz")], 5)
    ckpt_mb = ((tmp / "w.weights.h5").stat().st_size + (tmp / "o.npz").stat().st_size) / 2**20

    image = rng.normal(size=volume).astype("float32")
    label = rng.integers(0, 3, volume).astype("uint8")
    records = [write_npy(tmp / "i.npy", image), write_npy(tmp / "l.npy", label)]
    full = median_time(lambda: [verify_npy(tmp / n, r, full=True) for n, r in zip(("i.npy", "l.npy"), records)], 5)
    header = median_time(lambda: [verify_npy(tmp / n, r) for n, r in zip(("i.npy", "l.npy"), records)], 5)
    crc = max(full - header, 0.0)

    fraction = (ckpt + args.cases * crc / args.epochs) / epoch
    print(f"model: unet depth {depth}, base {base}; checkpoint files {ckpt_mb:.1f} MiB; case {volume}")
    print(f"step_s: {step:.3f}")
    print(f"epoch_estimate_s: {epoch:.1f}")
    print(f"checkpoint_checksum_s: {ckpt:.4f}")
    print(f"cache_crc_s_per_case: {crc:.4f}")
    print(f"checkpoint_checksum_fraction: {ckpt / epoch:.5f}")
    print(f"checksum_fraction_per_epoch: {fraction:.4f}")


if __name__ == "__main__":
    main()
