"""Ad-hoc check behind BENCHMARKS 9a: on the bundled sample, the probe CV with 4 fold
seeds, and probes trained on 800 random training images (3 draws) against all 1,000,
scored on the 1,000 test images. Reads the feature caches bench_rank.py (run 2, default
--work /tmp/bench-rank) left behind.

Run: PYTHONPATH=src .venv/bin/python docs/benchmarks/rank/sample_cv_check.py
"""
import numpy as np, time
from headstart.backbones.registry import create_backbone
from headstart.data.idx import load_sample
from headstart.features.cache import FeatureCache, cached_features
from headstart.rank import candidates_for
from headstart.rank.scores import probe_accuracy
from headstart.train.probe import fit_linear_probe
B=["tf_efficientnet_lite0","tf_efficientnet_lite1","tf_efficientnet_lite2"]
tr,te=load_sample()
c=FeatureCache("/tmp/bench-rank/sample/rank-cache"); tc=FeatureCache("/tmp/bench-rank/test-cache")
cands=candidates_for(B, native_sizes=dict(zip(B,(224,240,260))))
rng=np.random.default_rng(0)
for (b,s) in dict.fromkeys((x.backbone,x.image_size) for x in cands):
    bb=create_backbone(b,"auto",image_size=s)
    L=["stage-3","stage-2","stage-1","final"]
    f,u=cached_features(bb,tr,c,layers=L); g,v=cached_features(bb,te,tc,layers=L)
    for x in [x for x in cands if (x.backbone,x.image_size)==(b,s)]:
        X=np.concatenate([f[l] for l in x.layers],1); T=np.concatenate([g[l] for l in x.layers],1)
        cv=[probe_accuracy(X,tr.labels,seed=k) for k in range(4)]
        sub=[]
        for k in range(3):
            i=np.random.default_rng(k).permutation(1000)[:800]
            sub.append(fit_linear_probe(X[i],tr.labels[i],10).score(T,te.labels))
        full=fit_linear_probe(X,tr.labels,10).score(T,te.labels)
        print(f"{x.name:<58} cv seeds {' '.join(f'{a:.3f}' for a in cv)} mean {np.mean(cv):.3f} | test@800 {np.mean(sub):.3f} | test@1000 {full:.3f}",flush=True)
