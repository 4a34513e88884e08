"""Spatial members + flipped training images (feature-space augmentation), l2. Seed 0."""
import sys, time, numpy as np, torch
sys.path.insert(0, "/tmp/ens")
from headstart.data.idx import load_fashion_mnist
from headstart.data.split import sample_per_class
from headstart.data.arrays import from_arrays
from headstart.backbones.registry import create_backbone
from headstart.train.probe import fit_linear_probe
import importlib.util
spec = importlib.util.spec_from_file_location("e5", "/tmp/ens/exp5.py")
src = open("/tmp/ens/exp5.py").read().split("P = {}")[0]
ns = {}; exec(src.replace("seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0", "seed = 0"), ns)
run, tr, test = ns["run"], ns["tr"], ns["test"]
a = np.stack([tr._arrays[i] for i in range(len(tr))])[:, :, ::-1].copy()
trf = from_arrays(a, tr.labels, classes=tr.classes)
P = {}
for name, size in [("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260), ("tf_efficientnet_lite0", 112)]:
    z = np.load(f"/tmp/ens/sp_0_{name}_{size}.npz")
    bb = create_backbone(name, "bundled", image_size=size); bb.model.reset_classifier(0)
    f = run(bb, trf)
    for k in ("s2all", "s3"):
        A, B = z["tr_" + k], z["te_" + k]
        for l2 in (1e-3, 1e-2):
            p = fit_linear_probe(np.concatenate([A, f[k]]), np.concatenate([tr.labels, tr.labels]), 10, l2=l2).predict_proba(B)
            P.setdefault((k, l2, "flip"), []).append(p)
            q = fit_linear_probe(A, tr.labels, 10, l2=l2).predict_proba(B)
            P.setdefault((k, l2, "noflip"), []).append(q)
            print(name, size, k, l2, "flip", (p.argmax(1) == test.labels).mean(), "noflip", (q.argmax(1) == test.labels).mean(), flush=True)
    for key, ps in P.items():
        print("  avg", key, len(ps), (np.mean(ps, 0).argmax(1) == test.labels).mean(), flush=True)
