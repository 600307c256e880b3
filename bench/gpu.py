"""One-command GPU benchmark (issue 22): the paper's 3D U-Net through the library against hand-written PyTorch.

    KERAS_BACKEND=torch python bench/gpu.py              # on a GPU: 80×160×160 patches, batch 2, base 32, depth 4
    KERAS_BACKEND=torch python bench/gpu.py --quick      # anywhere (CPU): 16×32×32, base 4, depth 2

In one run, interleaved (median of several steps each):
- the training step through `Segmenter`'s path: the model `Segmenter(..., mixed_precision="mixed_bfloat16")`
  compiles (Adam, Dice+CE, per-class Dice metrics), `train_on_batch`;
- the same network hand-written in PyTorch (`bench/torch_unet.py`), bf16 autocast, channels_last_3d, fed the
  same way: the batch copied from host memory each step (`torch_step_ms`, the headline ratio's
  denominator), and already on the device (`torch_device_batch_step_ms`, against the Segmenter's
  `segmenter_device_batch_step_ms`: `segmenter_vs_torch_device_batch_step_ratio`);
- model FLOP utilisation (MFU): 3 × the forward convolution FLOPs per step / step time / the device's
  peak bf16 rate (`--peak-tflops`; known GPUs by name, else none is printed);
- sliding-window inference through `patching.sliding_window_predict` with the Segmenter's model, batch 8:
  patches per second (beside it the Segmenter's forward passes alone, and the hand-written network's over
  as many patches, batch 8, softmax copied to the host: no window merging).
Also timed, to show where the Segmenter's time goes: the same step with the batch already on the device
(`segmenter_device_batch_step_ms`: no host-to-device copy), and with `--compile` the Segmenter's model
recompiled with `jit_compile=True` (Keras wraps its train step in `torch.compile`; compile time reported).
`--profile FILE` writes torch.profiler's kernel table of three steps of each side.
Both sides compute in bf16 on a GPU; on a CPU in float32 (`--precision` to choose): a CPU without native bf16
(AVX2 only) runs bf16 convolutions 10-25x slower, and a CPU run is a check that every figure is produced. The run
files of 2026-12-04 name the PyTorch figures `torch_bf16_*`.
Goals: segmenter_vs_torch_step_ratio <= 1.3, inference_patches_per_s >= 100 (GPU).
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch_unet import TorchUNet, conv_flops, dice_ce_loss  # noqa: E402

from miscnn_lite.cli import _positive_int  # noqa: E402  (a count >= 1, as the CLI parses it)
from miscnn_lite.losses import per_class_dice_metrics  # noqa: E402
from miscnn_lite.models import unet  # noqa: E402
from miscnn_lite.patching import patch_grid, sliding_window_predict  # noqa: E402
from miscnn_lite.training import Segmenter  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}   # dense


def peak_tflops(given: float | None) -> float | None:
    if given is not None or not torch.cuda.is_available():
        return given
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def median_step(step, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync(); t = time.perf_counter(); step(); sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def write_profile(path: Path, steps: dict, sync) -> None:
    "torch.profiler's table (top 25 by device time, else CPU time) of three steps of each side, one section per side."
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    sections = []
    for name, step in steps.items():
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        sections.append(f"## {name}\n{prof.key_averages().table(sort_by=sort, row_limit=25)}")
    path.write_text("\n\n".join(sections))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes that run on a CPU in seconds")
    ap.add_argument("--repeats", type=_positive_int, default=None, help="timed steps per side (default 10, quick 3)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak bf16 TFLOP/s for MFU")
    ap.add_argument("--precision", choices=("bf16", "float32"), default=None,
                    help="both sides' compute precision (default: bf16 on a GPU, float32 on a CPU)")
    ap.add_argument("--compile", action="store_true", help="also time the model compiled with jit_compile=True")
    ap.add_argument("--profile", type=Path, default=None, help="write the profiler's kernel table to this file")
    args = ap.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("bench/gpu.py compares against PyTorch on the same device: run with KERAS_BACKEND=torch.")
    patch, base, depth = ((16, 32, 32), 4, 2) if args.quick else ((80, 160, 160), 32, 4)
    repeats = args.repeats or (3 if args.quick else 10)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    precision = args.precision or ("bf16" if device == "cuda" else "float32")
    policy = "mixed_bfloat16" if precision == "bf16" else None
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *patch, 1)).astype("float32")
    y = rng.integers(0, 3, size=(2, *patch, 1)).astype("int32")

    seg = Segmenter(unet(3, depth=depth, base_filters=base), patch_shape=patch, mixed_precision=policy,
                    loss="dice_ce", seed=0)
    net = TorchUNet(3, 1, depth=depth, base_filters=base).to(device).to(memory_format=torch.channels_last_3d)
    keras_trainable = sum(int(np.prod(w.shape)) for w in seg.model.trainable_weights)
    assert keras_trainable == sum(p.numel() for p in net.parameters()), "the two networks differ"
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(device)
    xt = xt.to(memory_format=torch.channels_last_3d)
    yt = torch.from_numpy(y[..., 0].astype(np.int64)).to(device)

    def torch_device_step(inputs=xt, labels=yt):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(inputs)
        dice_ce_loss(logits, labels).backward()
        optimizer.step()

    def torch_step():                            # from host memory, as the Segmenter's train_on_batch(x, y) is fed
        inputs = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(device)
        torch_device_step(inputs.to(memory_format=torch.channels_last_3d),
                          torch.from_numpy(y[..., 0].astype(np.int64)).to(device))

    def keras_step():
        seg.model.train_on_batch(x, y)
    x_dev, y_dev = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def keras_device_step():
        seg.model.train_on_batch(x_dev, y_dev)
    steps = {"segmenter": keras_step, "segmenter_device_batch": keras_device_step, "torch": torch_step,
             "torch_device_batch": torch_device_step}
    if args.compile:
        compiled = Segmenter(unet(3, depth=depth, base_filters=base), patch_shape=patch,
                             mixed_precision=policy, loss="dice_ce", seed=0).model
        compiled.compile(optimizer=keras.optimizers.Adam(1e-3), loss=compiled.loss,
                         metrics=per_class_dice_metrics(3, ["background", "class1", "class2"]), jit_compile=True)
        steps["segmenter_compiled"] = lambda: compiled.train_on_batch(x_dev, y_dev)
    warmup_s = {}
    for name, step in list(steps.items()):       # warm-up: compilation, autotuning, allocations
        sync(); t = time.perf_counter()
        try:
            step(); step(); sync()
        except Exception as error:               # torch.compile may fail on a backend/driver combination
            if name != "segmenter_compiled": raise
            print(f"segmenter_compiled failed, left out: {type(error).__name__}: {str(error)[:500]}")
            del steps[name]; args.compile = False
            continue
        warmup_s[name] = time.perf_counter() - t
    times = {name: [] for name in steps}
    for _ in range(repeats):                     # interleaved, one step each, so all see the same load
        for name, step in steps.items():
            times[name].append(median_step(step, 1, sync))
    if args.profile:
        write_profile(args.profile, steps, sync)
    step_s = {name: float(np.median(t)) for name, t in times.items()}
    seg_s, torch_s = step_s["segmenter"], step_s["torch"]
    train_flops = 3 * conv_flops(net, (1, *patch)) * len(x)

    volume = rng.normal(size=tuple(2 * p for p in patch)).astype("float32")
    n_patches = len(patch_grid(volume.shape, patch, 0.5))
    forward = lambda batch: keras.ops.convert_to_numpy(seg.model.predict_on_batch(batch)).astype(np.float32)
    batches = [rng.normal(size=(min(8, n_patches - i), *patch, 1)).astype("float32") for i in range(0, n_patches, 8)]
    net.eval()                                   # the hand-written network over the same number of patches
    torch_batches = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(b, -1, 1))) for b in batches]

    def sliding_window():                        # the Segmenter's route: patches, forward passes, weighted merge
        sliding_window_predict(volume, patch, 0.5, forward, batch_size=8)

    def forward_alone():                         # the Segmenter's forward passes alone, without window merging
        for batch in batches:
            forward(batch)

    def torch_forward():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for batch in torch_batches:
                net(batch.to(device).to(memory_format=torch.channels_last_3d)).float().softmax(1).cpu()
    inference = {"sliding_window": sliding_window, "forward": forward_alone, "torch": torch_forward}
    for run in inference.values():               # warm-up
        run(); sync()
    infer_times = {name: [] for name in inference}
    for _ in range(max(3, repeats // 3)):        # interleaved, one pass each per round; medians
        for name, run in inference.items():
            sync(); t = time.perf_counter(); run(); sync()
            infer_times[name].append(time.perf_counter() - t)
    infer_s, forward_s, torch_infer_s = (float(np.median(infer_times[n]))
                                         for n in ("sliding_window", "forward", "torch"))

    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "precision": precision,
              "segmenter_step_ms": seg_s * 1e3, "torch_step_ms": torch_s * 1e3,
              "segmenter_vs_torch_step_ratio": seg_s / torch_s,
              "segmenter_device_batch_step_ms": step_s["segmenter_device_batch"] * 1e3,
              "torch_device_batch_step_ms": step_s["torch_device_batch"] * 1e3,
              "segmenter_vs_torch_device_batch_step_ratio": step_s["segmenter_device_batch"]
              / step_s["torch_device_batch"],
              "train_tflop_per_step": train_flops / 1e12, "inference_patches_per_s": n_patches / infer_s,
              "segmenter_forward_patches_per_s": n_patches / forward_s,
              "torch_inference_patches_per_s": n_patches / torch_infer_s}
    if args.compile:
        result["segmenter_compiled_step_ms"] = step_s["segmenter_compiled"] * 1e3
        result["segmenter_compiled_vs_torch_device_batch_step_ratio"] = (step_s["segmenter_compiled"]
                                                                         / step_s["torch_device_batch"])
        result["segmenter_compiled_warmup_s"] = warmup_s["segmenter_compiled"]
    peak = peak_tflops(args.peak_tflops) if precision == "bf16" else None     # a bf16 peak: MFU of bf16 runs
    if peak:
        result["mfu_segmenter"] = train_flops / seg_s / (peak * 1e12)
        result["mfu_torch"] = train_flops / torch_s / (peak * 1e12)
    print(f"3D U-Net depth {depth}, base {base}, patch {patch}, batch 2, {result['device']}, {precision}, "
          f"{repeats} interleaved steps each")
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return result


if __name__ == "__main__":
    main()
