import time, numpy as np, torch
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.estimator import ImageClassifier
from headstart.backbones.registry import create_backbone
from headstart.features.cache import FeatureCache, cached_features
from headstart.train.probe import fit_linear_probe
from headstart.strategies.registry import get_strategy
LAYERS = ("stage-3", "stage-2", "stage-1", "final")
CONFIGS = [("tf_efficientnet_lite0", 112), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)]
train_all, test = load_fashion_mnist()
cache = FeatureCache("/tmp/ens/cache")
tr = sample_per_class(train_all, 100, seed=0)
yt = test.labels
P = []
for name, size in CONFIGS:
    bb = create_backbone(name, "bundled", image_size=size); bb.model.reset_classifier(0)
    f = lambda ds: np.concatenate([cached_features(bb, ds, cache, layers=LAYERS)[0][l] for l in LAYERS], 1)
    P.append(fit_linear_probe(f(tr), tr.labels, 10).predict_proba(f(test)))
print("avg4", (np.mean(P, 0).argmax(1) == yt).mean(), flush=True)
t = time.time()
cfg = get_strategy("fine-tune").default_config().replace(image_size=112)
clf = ImageClassifier("tf_efficientnet_lite0", "fine-tune", cfg, weights="bundled").fit(tr)
print("ft fit", time.time() - t, flush=True)
q = clf.predict_proba(test)
print("ft", (q.argmax(1) == yt).mean(), flush=True)
for w in (1, 2, 3):
    print("avg4+ft x", w, ((np.sum(P, 0) + w * q).argmax(1) == yt).mean(), flush=True)
np.save("/tmp/ens/ft_q0.npy", q)
