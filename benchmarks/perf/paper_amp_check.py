"""GPU check (issue 8): float32 vs TF32 vs bf16 on a CIFAR-shaped synthetic pipeline, WRN-40-2
baseline + OE fine-tune: per-step time, ID accuracy, mean AUROC / FPR95 per detector.

Run from the repository root: `python benchmarks/perf/paper_amp_check.py out.json`
(SMOKE=1: tiny, CPU).
"""

# ruff: noqa: E402  (sys.path is set up before the oebench imports)
import json
import sys

import numpy as np
import torch

sys.path[:0] = [".", "plugins"]
import os

from oebench_plugins.objectives import CrossEntropy, OutlierExposure
from oebench_plugins.synthetic import Blobs, Gaussian, Rademacher
from oebench_plugins.vision_models import wrn_40_2

from oebench.contracts.data import TensorImages
from oebench.contracts.detector import logsumexp64, msp_log_odds
from oebench.contracts.model import Classifier
from oebench.execute.outputs import forward
from oebench.execute.training import train
from oebench.metrics import ood_metrics

SMOKE = os.environ.get("SMOKE") == "1"
dev = torch.device("cpu" if SMOKE else "cuda")
N = 256 if SMOKE else 25600
MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
g = torch.Generator().manual_seed(0)


def templates(k, gen):
    t = torch.rand(k, 3, 4, 4, generator=gen)
    return torch.nn.functional.interpolate(t, size=32, mode="bicubic", align_corners=False)


T = templates(10, g)


def sample(tpl, n, gen, labels=None):
    lab = torch.randint(len(tpl), (n,), generator=gen) if labels is None else labels
    x = tpl[lab] * 0.6 + 0.2 + 0.12 * torch.randn(n, 3, 32, 32, generator=gen)
    return x.clamp(0, 1), lab


xtr, ytr = sample(T, N, g)
xte, yte = sample(T, 200 if SMOKE else 2000, g)
train_set, test_set = TensorImages(xtr, ytr), TensorImages(xte, yte)
outl = TensorImages(sample(templates(500, g), 2 * N, g)[0])
M = 200 if SMOKE else 2000
ood = {"unseen": TensorImages(sample(templates(10, g), M, g)[0])}
a, _ = sample(T, M, g)
b, _ = sample(T, M, g)
ood["mix"] = TensorImages((a + b) / 2)
for name, cls in [("gaussian", Gaussian), ("rademacher", Rademacher), ("blobs", Blobs)]:
    ood[name] = cls(n=200 if SMOKE else 2000).load("test", shape=(3, 32, 32), norm=(MEAN, STD))
DET = {
    "msp": msp_log_odds,
    "max-logit": lambda z: -z.max(1),
    "energy": lambda z: -logsumexp64(z),
    "uniform-ce": lambda z: -(logsumexp64(z) - z.mean(1)),
}
base = dict(
    batch_size=128,
    outlier_batch_size=256,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    augment=True,
)


def run(mode):
    torch.backends.cudnn.allow_tf32 = mode != "fp32-strict"
    torch.backends.cuda.matmul.allow_tf32 = mode != "fp32-strict"
    amp = "bf16" if mode == "bf16" else "off"
    torch.manual_seed(0)
    model = Classifier(wrn_40_2(10, (3, 32, 32)), MEAN, STD)
    out = {}
    for stage, obj, params, outs in [
        ("baseline", CrossEntropy(), dict(base, epochs=1 if SMOKE else 8, lr=0.1, amp=amp), None),
        ("oe", OutlierExposure(), dict(base, epochs=1 if SMOKE else 2, lr=0.001, amp=amp), outl),
    ]:
        secs = train(model, train_set, obj, params, 0, (3, 32, 32), dev, outs)
        model.eval()
        idz = forward(model, test_set, (3, 32, 32), dev, 1000)
        acc = float((idz.logits.argmax(1) == idz.labels).mean() * 100)
        res = {}
        oz = {
            k: np.asarray(forward(model, v, (3, 32, 32), dev, 1000).logits, np.float64)
            for k, v in ood.items()
        }
        for d, f in DET.items():
            ids = f(np.asarray(idz.logits, np.float64))
            per = {k: ood_metrics(ids, f(z)) for k, z in oz.items()}
            res[d] = {k: [round(m["auroc"], 2), round(m["fpr95"], 2)] for k, m in per.items()}
            res[d]["mean"] = [
                round(float(np.mean([m["auroc"] for m in per.values()])), 2),
                round(float(np.mean([m["fpr95"] for m in per.values()])), 2),
            ]
        steps = params["epochs"] * (N // 128)
        out[stage] = {
            "seconds": round(secs, 2),
            "ms_per_step": round(1000 * secs / steps, 2),
            "acc": round(acc, 2),
            "det": res,
        }
        print(
            mode,
            stage,
            out[stage]["seconds"],
            out[stage]["ms_per_step"],
            acc,
            {d: r["mean"] for d, r in res.items()},
            flush=True,
        )
    return out


res = {m: run(m) for m in (["fp32-strict"] if SMOKE else ["fp32-strict", "tf32", "bf16"])}
res["device"] = "cpu" if SMOKE else torch.cuda.get_device_name()
res["torch"] = torch.__version__
with open(sys.argv[1], "w") as fh:
    json.dump(res, fh, indent=1)
