"""What feeds the GPU: `Segmenter.fit` of the paper's 3D U-Net on phantoms with CT augmentation (issue 22, item 7).

    KERAS_BACKEND=torch python bench/gpu_fit.py                # on a GPU: 80×160×160 patches, batch 2, base 32
    KERAS_BACKEND=torch python bench/gpu_fit.py --quick        # anywhere (CPU): 16×32×32, base 4, depth 2

`bench/gpu.py` times the training step alone; a real run also has to load, crop and augment every
patch on the CPU. In one run: the ms per step of `train_on_batch` on one pre-made batch already on the
device, then `Segmenter.fit` for `--epochs` epochs of `--iterations` steps fed by the loader
(`PatchDataset`, CT augmentation, `--workers` threads) from the preprocessed cache of `--cases` phantoms.
`input_wait_fraction` = 1 - (steps x premade step) / (time of the fitted epochs after the first): the share
of a training epoch the device waits for data. `augmented_patches_per_s`: what the loader delivered.
The model trains in bf16 (`mixed_bfloat16`) on a GPU and in float32 on a CPU (`--precision` to choose): a CPU
without native bf16 (AVX2 only) runs bf16 convolutions 10-25x slower.
"""
import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from miscnn_lite.augmentation import ct_augmentation  # noqa: E402
from miscnn_lite.cli import _positive_int  # noqa: E402  (a count >= 1, as the CLI parses it)
from miscnn_lite.io import open_dataset  # noqa: E402
from miscnn_lite.models import unet  # noqa: E402
from miscnn_lite.phantoms import make_phantom_dataset  # noqa: E402
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore  # noqa: E402
from miscnn_lite.training import Segmenter  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes that run on a CPU in seconds")
    ap.add_argument("--workers", type=_positive_int, default=None, help="loader threads (default: CPU cores, quick 2)")
    ap.add_argument("--cases", type=_positive_int, default=None, help="phantom cases (default 8, quick 3)")
    ap.add_argument("--epochs", type=_positive_int, default=3, help="fitted epochs; the first (warm-up) is left out")
    ap.add_argument("--iterations", type=_positive_int, default=None, help="steps per epoch (default 40, quick 3)")
    ap.add_argument("--precision", choices=("bf16", "float32"), default=None,
                    help="compute precision (default: bf16 on a GPU, float32 on a CPU)")
    args = ap.parse_args(argv)
    quick = args.quick
    patch, base, depth = ((16, 32, 32), 4, 2) if quick else ((80, 160, 160), 32, 4)
    shape = (32, 64, 64) if quick else (128, 256, 256)
    workers = args.workers or (2 if quick else os.cpu_count())
    iterations = args.iterations or (3 if quick else 40)
    precision = args.precision or ("float32" if _device().endswith("cpu") else "bf16")
    if args.epochs < 2:
        raise SystemExit("--epochs: give at least 2 (the first epoch is the warm-up and is left out).")
    tmp = Path(tempfile.mkdtemp(prefix="gpu_fit_"))
    atexit.register(shutil.rmtree, tmp, True)    # phantoms and the run folder: removed however the script ends
    t = time.perf_counter()
    data = make_phantom_dataset(tmp / "data", n_cases=args.cases or (3 if quick else 8), shape=shape,
                                spacing=(1.5, 0.8, 0.8), progress=False)
    phantoms_s = time.perf_counter() - t

    def segmenter():
        return Segmenter(unet(3, depth=depth, base_filters=base), Pipeline([ClipHU(-79, 304), ZScore("dataset")]),
                         patch_shape=patch, batch_size=2, iterations=iterations, augmentation=ct_augmentation(),
                         mixed_precision="mixed_bfloat16" if precision == "bf16" else None, workers=workers, seed=0)

    seg = segmenter()                            # the step alone, on one pre-made batch on the device
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.normal(size=(2, *patch, 1)).astype("float32"))
    y = keras.ops.convert_to_tensor(np.eye(3, dtype="float32")[rng.integers(0, 3, size=(2, *patch))])
    for _ in range(3):
        seg.model.train_on_batch(x, y)
    steps = []
    for _ in range(10):
        t = time.perf_counter(); seg.model.train_on_batch(x, y)
        keras.ops.convert_to_numpy(seg.model.optimizer.iterations); steps.append(time.perf_counter() - t)
    step_s = float(np.median(steps))

    fitted = segmenter()
    log = fitted.fit(open_dataset(data), epochs=args.epochs, out=tmp / "run")
    epoch_s = float(log["time_s"].iloc[1:].median())
    result = {"device": _device(), "precision": precision, "workers": workers, "phantoms_s": phantoms_s,
              "premade_step_ms": step_s * 1e3, "fit_epoch_s": epoch_s, "fit_step_ms": epoch_s / iterations * 1e3,
              "input_wait_fraction": max(0.0, 1 - iterations * step_s / epoch_s),
              "augmented_patches_per_s": 2 * iterations / epoch_s}
    print(f"3D U-Net depth {depth}, base {base}, patch {patch}, batch 2, CT augmentation, {workers} loader threads, "
          f"{iterations} steps x {args.epochs - 1} timed epochs")
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return result


def _device() -> str:
    if keras.backend.backend() == "torch":
        import torch
        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return keras.backend.backend() + " cpu"


if __name__ == "__main__":
    main()
