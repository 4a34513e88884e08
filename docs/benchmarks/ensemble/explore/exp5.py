"""Spatial pooling grid variants; ensemble of spatial members. FMNIST 100/class seed 0."""
import time, sys, os, numpy as np, torch, torch.nn.functional as F
from torch.utils.data import DataLoader
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.data.dataset import TorchImageDataset
from headstart.backbones.registry import create_backbone
from headstart.features.fastpath import inference_transforms
from headstart.train.probe import fit_linear_probe
torch.set_num_threads(2)
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
train_all, test = load_fashion_mnist()
tr = sample_per_class(train_all, 100, seed=seed)
def run(bb, ds):
    t, c = inference_transforms(bb.preprocessing, True)
    out = {k: [] for k in ("g", "s2", "s3", "s2all")}
    m = bb.model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x, _ in DataLoader(TorchImageDataset(ds, t), batch_size=128, collate_fn=c):
            final, inter = m.forward_intermediates(x, indices=[2, 3, 4])
            maps = [f.float() for f in list(inter) + [final]]
            g = [f.mean((2, 3)) for f in maps]
            out["g"].append(torch.cat(g, 1).numpy())
            out["s2"].append(torch.cat([F.adaptive_avg_pool2d(f, 2).flatten(1) for f in maps[-2:]] + g, 1).numpy())
            out["s3"].append(torch.cat([F.adaptive_avg_pool2d(f, 3).flatten(1) for f in maps[-2:]] + g, 1).numpy())
            out["s2all"].append(torch.cat([F.adaptive_avg_pool2d(f, 2).flatten(1) for f in maps] + g, 1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
P = {}
for name, size in [("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260), ("tf_efficientnet_lite0", 112)]:
    f = f"/tmp/ens/sp_{seed}_{name}_{size}.npz"
    if os.path.exists(f):
        z = np.load(f); a = {k[3:]: z[k] for k in z if k.startswith("tr_")}; b = {k[3:]: z[k] for k in z if k.startswith("te_")}
    else:
        bb = create_backbone(name, "bundled", image_size=size); bb.model.reset_classifier(0)
        t0 = time.time(); a = run(bb, tr); b = run(bb, test); print(name, size, "extract", round(time.time() - t0), flush=True)
        np.savez(f, **{f"tr_{k}": v for k, v in a.items()}, **{f"te_{k}": v for k, v in b.items()})
    for k in a:
        p = fit_linear_probe(a[k], tr.labels, 10).predict_proba(b[k])
        P[(name, size, k)] = p
        print(name, size, k, a[k].shape[1], (p.argmax(1) == test.labels).mean(), flush=True)
    for k in ("g", "s2", "s3", "s2all"):
        ps = [v for kk, v in P.items() if kk[2] == k]
        print("  avg so far", k, len(ps), (np.mean(ps, 0).argmax(1) == test.labels).mean(), flush=True)
