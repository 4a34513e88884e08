import time, json, itertools
import numpy as np, torch
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.backbones.registry import create_backbone
from headstart.features.cache import FeatureCache, cached_features
from headstart.train.probe import fit_linear_probe
LAYERS = ("stage-3", "stage-2", "stage-1", "final")
CONFIGS = [("tf_efficientnet_lite0", 112), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260),
           ("tf_efficientnet_lite0", 160), ("tf_efficientnet_lite1", 160), ("tf_efficientnet_lite2", 180), ("tf_efficientnet_lite2", 320)]
train_all, test = load_fashion_mnist()
cache = FeatureCache("/tmp/ens/cache")
def feats(bb, ds):
    f, _ = cached_features(bb, ds, cache, layers=LAYERS)
    return np.concatenate([f[l] for l in LAYERS], 1)
for seed in (0, 1, 2):
    tr = sample_per_class(train_all, 100, seed=seed)
    y, yt = tr.labels, test.labels
    P = []
    for name, size in CONFIGS:
        t = time.time()
        bb = create_backbone(name, "bundled", image_size=size); bb.model.reset_classifier(0)
        p = fit_linear_probe(feats(bb, tr), y, 10)
        P.append(p.predict_proba(feats(bb, test)))
        print(seed, name, size, (P[-1].argmax(1) == yt).mean(), f"{time.time()-t:.0f}s", flush=True)
    print(seed, "avg8", (np.mean(P, 0).argmax(1) == yt).mean(), "avg first4", (np.mean(P[:4], 0).argmax(1) == yt).mean(),
          "geo8", (np.mean(np.log(np.array(P) + 1e-9), 0).argmax(1) == yt).mean(), flush=True)
