"""Feasibility: FMNIST 100/class, FE configs, average vs concat vs flip-augmented probes."""
import sys, time, json
import numpy as np, torch
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.data.arrays import from_arrays
from headstart.backbones.registry import create_backbone
from headstart.features.cache import FeatureCache, cached_features
from headstart.train.probe import fit_linear_probe
torch.set_num_threads(2)
LAYERS = ("stage-3", "stage-2", "stage-1", "final")
CONFIGS = [("tf_efficientnet_lite0", 112), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)]
train_all, test = load_fashion_mnist()
cache = FeatureCache("/tmp/ens/cache")
def arrays(ds): return np.stack([ds._arrays[i] for i in range(len(ds))])
def flipped(ds):
    a = arrays(ds)[:, :, ::-1].copy()
    return from_arrays(a, ds.labels, classes=ds.classes)
def feats(bb, ds):
    f, _ = cached_features(bb, ds, cache, layers=LAYERS)
    return np.concatenate([f[l] for l in LAYERS], 1)
out = {}
for seed in (0, 1, 2):
    tr = sample_per_class(train_all, 100, seed=seed)
    trf = flipped(tr)
    y, yt = tr.labels, test.labels
    P, PF, FT, FTE, FF = [], [], [], [], []
    for name, size in CONFIGS:
        t = time.time()
        bb = create_backbone(name, "bundled", image_size=size)
        bb.model.reset_classifier(0)
        a, b, c = feats(bb, tr), feats(bb, test), feats(bb, trf)
        p = fit_linear_probe(a, y, 10)
        pf = fit_linear_probe(np.concatenate([a, c]), np.concatenate([y, y]), 10)
        P.append(p.predict_proba(b)); PF.append(pf.predict_proba(b))
        FT.append(a); FTE.append(b); FF.append(c)
        print(seed, name, size, "single", (P[-1].argmax(1) == yt).mean(), "flip", (PF[-1].argmax(1) == yt).mean(), f"{time.time()-t:.0f}s", flush=True)
    r = {}
    r["avg4"] = (np.mean(P, 0).argmax(1) == yt).mean()
    r["avg4flip"] = (np.mean(PF, 0).argmax(1) == yt).mean()
    A = np.concatenate(FT, 1); B = np.concatenate(FTE, 1); C = np.concatenate(FF, 1)
    for l2 in (1e-3, 1e-2, 1e-1):
        r[f"concat l2={l2}"] = fit_linear_probe(A, y, 10, l2=l2).score(B, yt)
        r[f"concatflip l2={l2}"] = fit_linear_probe(np.concatenate([A, C]), np.concatenate([y, y]), 10, l2=l2).score(B, yt)
    print(seed, json.dumps(r), flush=True)
    out[seed] = r
