"""Linear-probe accuracy on full Fashion-MNIST by feature layer and L2 strength.

Run: .venv/bin/python bench/bench_probe_layers.py   (prints one line per layer set)
"""

import time

import numpy as np

from headstart.backbones.registry import create_backbone
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.features.cache import FeatureCache, cached_features
from headstart.train.probe import fit_linear_probe

train, test = load_fashion_mnist()
b = create_backbone(image_size=112)
b.model.reset_classifier(0)
cache = FeatureCache("/tmp/headstart-bench-cache")
layers = ("stage3", "stage4", "final")
t = time.time()
fte, _ = cached_features(b, test, cache, layers=layers)
print("test feats", time.time() - t, flush=True)
for k in (10, 100):
    sub = sample_per_class(train, k, seed=0)
    ftr, _ = cached_features(b, sub, cache, layers=layers)
    for combo in [("final",), ("stage4",), ("stage4", "final"), ("stage3", "stage4", "final")]:
        xtr = np.concatenate([ftr[name] for name in combo], 1)
        xte = np.concatenate([fte[name] for name in combo], 1)
        res = []
        for l2 in (1e-3, 1e-2, 1e-1, 1.0):
            p = fit_linear_probe(xtr, sub.labels, 10, l2=l2)
            res.append(f"{l2:g}:{p.score(xte, test.labels):.3f}")
        print(k, combo, " ".join(res), flush=True)
