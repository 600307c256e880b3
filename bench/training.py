"""Training-step benchmark (issue 6): the engine's live loader vs. the same steps on pre-made tensors.

loader_step_ratio = time per training step when `fit` reads patches from the cached `PatchDataset`
(foreground oversampling, no augmentation, 2 worker threads) / time per step on the same batches
already in memory. Goal <= 1.10. CPU only here: the GPU part of issue 6 (80x160x160, batch 2,
base 32, fp32 vs. mixed bf16 on KERAS_BACKEND=torch) needs a GPU session; not measured.

Two CPU fixes of this library, each measured against what it replaces, interleaved in one run:

conv_rewrite_speedup = time per training step of a U-Net built from Keras's own `Conv3D` /
`Conv3DTranspose` / time per step of the same network (same weights) built from `SliceConv3D` /
`ShuffleConv3DTranspose` with the slices forced (models.py: 3D convolutions as 2D convolutions over depth
offsets). strided_conv_speedup, dilated_conv_speedup: the same for `nnunet_like` (strided-convolution
down-sampling) and a 3D MS-D net (dilated convolutions). Under 1 means Keras's `Conv3D` is the faster one in
this process: `SliceConv3D` itself computes slices only without TensorFlow's oneDNN kernels and for dilated
kernels (the line `onednn_kernels` says which case this run is; the Keras-vs-PyTorch step uses that choice).

heap_threshold_speedup = time per `fit` step reading a `PatchDataset` with glibc's malloc thresholds
as TensorFlow's generator dataset leaves them in a fresh process (128 KiB) / the same with the
`HeapThresholds` callback (runtime.py) that every `Segmenter.fit` uses.

keras_tf_vs_pytorch_step_ratio = time per training step of the U-Net (depth 3, base 8, batch 2, Dice+CE,
Adam) through Keras on TensorFlow / the same network written in plain PyTorch (`bench/torch_unet.py`,
equal parameter counts) on the same batch and the same threads, interleaved. The same with the Keras
model under the `mixed_bfloat16` policy (bf16 convolutions through oneDNN where the CPU has
avx512_bf16): keras_tf_bf16_vs_pytorch_step_ratio — bf16 Keras against float32 PyTorch, the lever the goal
names; keras_tf_bf16_vs_pytorch_bf16_step_ratio compares it with PyTorch under its own bf16 autocast, like
against like. "With the same Dice": the three (Keras float32, Keras
mixed_bfloat16 from the same initial weights, PyTorch) then train on the same 16 batches for 10 epochs
(Adam, learning rate 3e-3)
and are scored on 4 held-out batches (hard Dice of kidney+tumor and of tumor, pooled over the held-out
patches): `bf16_vs_fp32_loss_ratio` (last-epoch training loss) and `bf16_vs_fp32_dice_difference`. The
batches are 1.8 % foreground and 160 steps only start to find it: the loss is the steadier figure.

Usage: python bench/training.py [--quick] [--only-pytorch]; prints the ratios, `loader_step_ratio` last.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np

from miscnn_lite.loading import PreprocessedCache, patch_dataset_class
from miscnn_lite.losses import get_loss
from miscnn_lite.models import ShuffleConv3DTranspose, SliceConv3D, _onednn_kernels, msd_net, nnunet_like, unet
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.runtime import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, HeapThresholds, _glibc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-pytorch", action="store_true", help="only the Keras vs plain PyTorch comparison")
    args = ap.parse_args()
    steps, epochs = (8, 2) if args.quick else (20, 3)
    patch, base = ((32, 32, 32), 8) if args.quick else ((32, 64, 64), 8)
    with tempfile.TemporaryDirectory() as d:
        cases = [generate_phantom(s, shape=(48, 96, 96)) for s in range(6)]
        entries = PreprocessedCache(Path(d), Pipeline([ClipHU(-79, 304), ZScore("image")])).prepare(cases)
        ds = patch_dataset_class()(entries, patch, batch_size=2, iterations=steps, workers=2, seed=0)
        xs = np.concatenate([ds.batch(i)[0] for i in range(steps)])
        ys = np.concatenate([ds.batch(i)[1] for i in range(steps)])
        vs_torch = pytorch_reference(xs[:2], ys[:2], base, epochs * 3)
        onednn = _onednn_kernels()
        print(f"onednn_kernels: {onednn} (SliceConv3D computes slices "
              f"{'for dilated kernels only' if onednn else 'for every convolution'})")
        for name, (ours, theirs) in vs_torch.items():
            print(f"{name.removesuffix('_ratio')}: Keras {ours * 1e3:.0f} ms, plain PyTorch {theirs * 1e3:.0f} ms "
                  "per step")                                      # the name: value line below is the ratio alone
            print(f"{name}: {ours / theirs:.3f}")
        scores = holdout_dice(xs, ys, base, n_eval=2 if args.quick else 4, epochs=1 if args.quick else 10)
        for name, (loss, fg, tumor) in scores.items():
            print(f"{name}: last-epoch training loss {loss:.4f}; held-out Dice kidney+tumor {fg:.3f}, "
                  f"tumor {tumor:.3f}")
        print(f"bf16_vs_fp32_loss_ratio: {scores['keras_bf16'][0] / scores['keras_fp32'][0]:.4f}")
        print(f"bf16_vs_fp32_dice_difference: {scores['keras_bf16'][1] - scores['keras_fp32'][1]:+.3f}")
        if args.only_pytorch:
            return

        def model():
            m = unet(3, depth=3, base_filters=base)
            m.compile(keras.optimizers.Adam(1e-3), get_loss("dice_ce"))
            return m
        live, premade = model(), model()
        heap = [HeapThresholds()]                                              # as Segmenter.fit does
        live.fit(ds, epochs=1, verbose=0, callbacks=heap)                      # compile + warm-up
        premade.fit(xs, ys, batch_size=2, epochs=1, verbose=0, shuffle=False)
        t_live, t_pre = [], []
        for _ in range(epochs):                                                # interleaved, same load
            t = time.perf_counter(); live.fit(ds, epochs=1, verbose=0, callbacks=heap)
            t_live.append(time.perf_counter() - t)
            t = time.perf_counter(); premade.fit(xs, ys, batch_size=2, epochs=1, verbose=0, shuffle=False)
            t_pre.append(time.perf_counter() - t)
        rewrites = [(name, what, conv_rewrite(xs[:2], ys[:2], build, epochs * 3)) for name, what, build in (
            ("conv_rewrite_speedup", f"U-Net depth 3, base {base}", lambda: unet(3, depth=3, base_filters=base)),
            ("strided_conv_speedup", f"nnunet_like depth 3, base {base}", lambda: nnunet_like(3, depth=3,
                                                                                              base_filters=base)),
            ("dilated_conv_speedup", "3D MS-D net", lambda: msd_net(3, depth=20 if args.quick else 40)))]
        heap_frozen, heap_fixed = heap_thresholds(ds, model, epochs)
    live_ms, pre_ms = np.median(t_live) / steps * 1e3, np.median(t_pre) / steps * 1e3
    print(f"U-Net depth 3, base {base}, patch {patch}, batch 2, {keras.backend.backend()} backend, CPU")
    for name, what, (native, ours) in rewrites:
        print(f"{what}, train step, Keras Conv3D layers: {native * 1e3:.0f} ms; "
              f"SliceConv3D layers: {ours * 1e3:.0f} ms")
        print(f"{name}: {native / ours:.2f}")
    if heap_frozen is not None:
        print(f"fit step, malloc thresholds frozen at 128 KiB: {heap_frozen / steps * 1e3:.0f} ms; "
              f"with HeapThresholds: {heap_fixed / steps * 1e3:.0f} ms")
        print(f"heap_threshold_speedup: {heap_frozen / heap_fixed:.2f}")
    print(f"step with live loader: {live_ms:.0f} ms; on pre-made tensors: {pre_ms:.0f} ms")
    print(f"loader_step_ratio: {live_ms / pre_ms:.3f}")


def _channels_first(a):
    "A channels-last numpy batch as a channels-first torch tensor (the layout of `TorchUNet`)."
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))


def _torch_labels(y):
    "A (B, D, H, W, 1) label batch as the (B, D, H, W) int64 tensor PyTorch's losses take."
    import torch
    return torch.from_numpy(np.asarray(y).reshape(y.shape[:4]).astype(np.int64))


def pytorch_reference(x, y, base, repeats):
    """Median seconds per training step, interleaved: {ratio name: (Keras, plain PyTorch)} for the
    Keras U-Net in float32 and under mixed_bfloat16 against `TorchUNet` in float32 on the same batch, and
    the mixed_bfloat16 Keras step against PyTorch's own bf16 autocast (like against like)."""
    import torch
    from torch_unet import TorchUNet, dice_ce_loss

    from miscnn_lite.training import with_dtype_policy
    torch.manual_seed(0)
    net = TorchUNet(3, 1, depth=3, base_filters=base)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    xt = _channels_first(x)
    yt = _torch_labels(y)

    def torch_step(bf16=False):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):      # PyTorch's own mixed precision
            loss = dice_ce_loss(net(xt), yt)
        loss.backward()
        optimizer.step()
    fp32 = unet(3, depth=3, base_filters=base)
    models = {"keras_tf_vs_pytorch_step_ratio": fp32,
              "keras_tf_bf16_vs_pytorch_step_ratio": with_dtype_policy(fp32, "mixed_bfloat16")}
    keras_trainable = sum(int(np.prod(w.shape)) for w in fp32.trainable_weights)
    assert keras_trainable == sum(p.numel() for p in net.parameters()), "the two networks differ"
    for m in models.values():
        m.compile(keras.optimizers.Adam(1e-3), get_loss("dice_ce"))
        m.train_on_batch(x, y)
    torch_step(), torch_step(bf16=True)
    times = {}
    for _ in range(repeats):
        for name, m in models.items():
            t = time.perf_counter(); m.train_on_batch(x, y); times.setdefault(name, []).append(time.perf_counter() - t)
        for side, bf16 in (("torch", False), ("torch_bf16", True)):
            t = time.perf_counter(); torch_step(bf16); times.setdefault(side, []).append(time.perf_counter() - t)
    ratios = {name: (np.median(times[name]), np.median(times["torch"])) for name in models}
    ratios["keras_tf_bf16_vs_pytorch_bf16_step_ratio"] = (np.median(times["keras_tf_bf16_vs_pytorch_step_ratio"]),
                                                          np.median(times["torch_bf16"]))
    return ratios


def holdout_dice(xs, ys, base, n_eval, epochs):
    """{keras_fp32, keras_bf16, pytorch: (mean training loss of the last epoch, kidney+tumor Dice, tumor Dice)}
    after `epochs` passes over all but the last `n_eval` batches of 2, scored on those (hard Dice pooled over
    the held-out patches; batch norm with the held-out batch's statistics on all three)."""
    import torch
    from torch_unet import TorchUNet, dice_ce_loss

    from miscnn_lite.evaluation import dice_score
    from miscnn_lite.training import with_dtype_policy
    keras.utils.set_random_seed(1)
    torch.manual_seed(1)
    fp32 = unet(3, depth=3, base_filters=base)
    bf16 = with_dtype_policy(fp32, "mixed_bfloat16")                 # the same initial weights
    net = TorchUNet(3, 1, depth=3, base_filters=base)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for m in (fp32, bf16):
        m.compile(keras.optimizers.Adam(3e-3), get_loss("dice_ce"))
    n_train = len(xs) // 2 - n_eval
    for _ in range(epochs):
        losses = {"keras_fp32": [], "keras_bf16": [], "pytorch": []}
        for i in range(n_train):
            x, y = xs[2 * i:2 * i + 2], ys[2 * i:2 * i + 2]
            losses["keras_fp32"].append(float(fp32.train_on_batch(x, y)))
            losses["keras_bf16"].append(float(bf16.train_on_batch(x, y)))
            optimizer.zero_grad(set_to_none=True)
            loss = dice_ce_loss(net(_channels_first(x)), _torch_labels(y))
            loss.backward()
            optimizer.step()
            losses["pytorch"].append(loss.item())
    x, truth = xs[2 * n_train:], np.asarray(ys[2 * n_train:]).reshape(len(xs) - 2 * n_train, *xs.shape[1:4])
    with torch.no_grad():                                  # the PyTorch network is still in train mode
        preds = {"pytorch": net(_channels_first(x)).argmax(1).numpy()}
    for name, m in (("keras_fp32", fp32), ("keras_bf16", bf16)):
        preds[name] = np.argmax(keras.ops.convert_to_numpy(m(x, training=True)), -1)
    return {name: (np.mean(losses[name]), dice_score(truth > 0, p > 0, 1), dice_score(truth, p, 2))
            for name, p in preds.items()}


def _native(layer):
    "Keras's own layer with the same configuration (weights are copied by clone_model's caller)."
    if isinstance(layer, SliceConv3D): return keras.layers.Conv3D.from_config(layer.get_config())
    if isinstance(layer, ShuffleConv3DTranspose): return keras.layers.Conv3DTranspose.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def conv_rewrite(x, y, build, repeats):
    """Median seconds per train_on_batch of `build()`: (Keras's Conv3D layers, ours with the slices forced), same
    weights, interleaved."""
    ours = build()
    for layer in ours.layers:
        if isinstance(layer, SliceConv3D): layer.slices = True          # the rewrite, whichever route is faster
    native = keras.models.clone_model(ours, clone_function=_native)
    native.set_weights(ours.get_weights())
    assert not any(isinstance(l, SliceConv3D) for l in native.layers)
    times = {}
    for m in (native, ours):
        m.compile(keras.optimizers.Adam(1e-3), get_loss("dice_ce"))
        m.train_on_batch(x, y)
    for _ in range(repeats):
        for name, m in (("native", native), ("ours", ours)):
            t = time.perf_counter(); m.train_on_batch(x, y); times.setdefault(name, []).append(time.perf_counter() - t)
    return np.median(times["native"]), np.median(times["ours"])


class _FrozenThresholds(keras.callbacks.Callback):
    "The state TensorFlow's generator dataset leaves a fresh process in: both thresholds 128 KiB."
    def on_train_batch_begin(self, batch, logs=None):
        _glibc().mallopt(M_MMAP_THRESHOLD, 128 << 10); _glibc().mallopt(M_TRIM_THRESHOLD, 128 << 10)


def heap_thresholds(ds, model, epochs):
    "Median seconds per fit epoch: (thresholds frozen at 128 KiB, HeapThresholds); (None, None) without glibc."
    if _glibc() is None: return None, None
    m = model()
    m.fit(ds, epochs=1, verbose=0, callbacks=[HeapThresholds()])
    times = {}
    for _ in range(epochs):
        for name, cb in (("frozen", _FrozenThresholds()), ("fixed", HeapThresholds())):
            t = time.perf_counter(); m.fit(ds, epochs=1, verbose=0, callbacks=[cb])
            times.setdefault(name, []).append(time.perf_counter() - t)
    return np.median(times["frozen"]), np.median(times["fixed"])


if __name__ == "__main__":
    main()
