"""Scratch (session 38): Keras-TF step under grappler's oneDNN bf16 auto mixed precision vs the Keras
mixed_bfloat16 policy, each interleaved with plain PyTorch float32 on the same batch (bench/training.py's setup)."""
import os, sys, time, tempfile
from pathlib import Path
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
mode = sys.argv[1]
import tensorflow as tf
if mode == "grappler":
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
import keras, numpy as np
sys.path.insert(0, "/work/main/bench")
from training import pytorch_reference, _channels_first, _torch_labels
from miscnn_lite.loading import PreprocessedCache, patch_dataset_class
from miscnn_lite.losses import get_loss
from miscnn_lite.models import unet
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.training import with_dtype_policy
import torch
from torch_unet import TorchUNet, dice_ce_loss

with tempfile.TemporaryDirectory() as d:
    cases = [generate_phantom(s, shape=(48, 96, 96)) for s in range(6)]
    entries = PreprocessedCache(Path(d), Pipeline([ClipHU(-79, 304), ZScore("image")])).prepare(cases)
    ds = patch_dataset_class()(entries, (32, 64, 64), batch_size=2, iterations=20, workers=2, seed=0)
    xs = np.concatenate([ds.batch(i)[0] for i in range(20)]); ys = np.concatenate([ds.batch(i)[1] for i in range(20)])
x, y = xs[:2], ys[:2]
torch.manual_seed(0)
net = TorchUNet(3, 1, depth=3, base_filters=8); opt = torch.optim.Adam(net.parameters(), 1e-3)
xt, yt = _channels_first(x), _torch_labels(y)
def torch_step():
    opt.zero_grad(set_to_none=True); loss = dice_ce_loss(net(xt), yt); loss.backward(); opt.step()
keras.utils.set_random_seed(0)
m = unet(3, depth=3, base_filters=8)
if mode == "policy":
    m = with_dtype_policy(m, "mixed_bfloat16")
m.compile(keras.optimizers.Adam(1e-3), get_loss("dice_ce"))
m.train_on_batch(x, y); torch_step(); torch_step()
tk, tt = [], []
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
    t = time.perf_counter(); m.train_on_batch(x, y); tk.append(time.perf_counter() - t)
    t = time.perf_counter(); torch_step(); tt.append(time.perf_counter() - t)
k, p = np.median(tk), np.median(tt)
losses = [float(m.train_on_batch(xs[2 * (i % 10):2 * (i % 10) + 2], ys[2 * (i % 10):2 * (i % 10) + 2])) for i in range(40)]
print(f"{mode}: Keras {k*1e3:.0f} ms, PyTorch fp32 {p*1e3:.0f} ms, ratio {k/p:.3f}; loss after 40 more steps {np.mean(losses[-10:]):.4f}")
