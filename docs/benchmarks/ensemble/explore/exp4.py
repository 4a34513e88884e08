"""Spatial (2x2 grid) pooling vs global pooling, lite0@112 and lite1@240, FMNIST 100/class seed 0."""
import time, numpy as np, torch, torch.nn.functional as F
from torch.utils.data import DataLoader
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.data.dataset import TorchImageDataset
from headstart.backbones.registry import create_backbone
from headstart.features.fastpath import inference_transforms
from headstart.train.probe import fit_linear_probe
torch.set_num_threads(2)
train_all, test = load_fashion_mnist()
tr = sample_per_class(train_all, 100, seed=0)
def run(bb, ds, grid):
    t, c = inference_transforms(bb.preprocessing, True)
    out = {k: [] for k in ("g", "s")}
    m = bb.model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x, _ in DataLoader(TorchImageDataset(ds, t), batch_size=128, collate_fn=c):
            final, inter = m.forward_intermediates(x, indices=[2, 3, 4])  # stages 2..4 + final map
            maps = list(inter) + [final]
            out["g"].append(torch.cat([f.float().mean((2, 3)) for f in maps], 1).numpy())
            out["s"].append(torch.cat([F.adaptive_avg_pool2d(f.float(), grid).flatten(1) for f in maps[-2:]] + [f.float().mean((2, 3)) for f in maps], 1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
for name, size in [("tf_efficientnet_lite0", 112), ("tf_efficientnet_lite1", 240)]:
    bb = create_backbone(name, "bundled", image_size=size); bb.model.reset_classifier(0)
    t0 = time.time(); a = run(bb, tr, 2); b = run(bb, test, 2)
    print(name, size, "extract", round(time.time() - t0), flush=True)
    for k in ("g", "s"):
        for l2 in (1e-3, 1e-2):
            acc = fit_linear_probe(a[k], tr.labels, 10, l2=l2).score(b[k], test.labels)
            print(name, size, k, a[k].shape[1], l2, acc, flush=True)
