"""Every performance measurement of oebench in one run, printed as one table (regression check).

    python benchmarks/perf/run_all.py                       # everything, about 2-3 minutes
    python benchmarks/perf/run_all.py --out /tmp/perf       # also keep the CSV, crops, scores
    python benchmarks/perf/run_all.py --skip detectors      # leave out a part (repeatable)

Parts (each in fresh subprocesses, so import costs are charged where they occur):

- ``quickstart``: a cold ``oebench run`` (empty cache and store in a temporary folder), with the
  training and scoring seconds the store records, then a warm ``oebench run --rerun`` (every
  cache filled), best of two;
- ``crops``: loading the photo-crop pictures, building 20,000 photo crops and 1,000 texture
  crops at the quickstart's ID shape (1 x 28 x 28), and a digest of their pixels;
- ``odin``: ODIN scores of 13,000 images (one quickstart cell) with a seeded small CNN;
- ``imports``: ``import oebench.cli`` and ``oebench --help`` wall times, heavy modules loaded;
- ``metrics``: ``ood_metrics`` against scikit-learn's three calls on 1,000,000 scores;
- ``detectors``: ``perf_detectors_memory.py`` at paper scale (50,000 x 512): fit + score
  seconds and peak RSS of every logit/feature detector.

The ``oebench`` importable from ``PYTHONPATH`` is measured, so the same script compares two trees:
``PYTHONPATH=/tmp/before:/tmp/before/plugins python benchmarks/perf/run_all.py --benchmark
/tmp/before/benchmarks/quickstart.toml``. Timings depend on the machine's load: the table
starts with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: subprocesses run here, so that a checkout in the working directory does not shadow the
#: ``oebench`` on ``PYTHONPATH``
CWD = tempfile.mkdtemp(prefix="oebench-perf-")
PARTS = ("quickstart", "crops", "odin", "imports", "metrics", "detectors")
Row = tuple[str, str, str]  # measurement, value, detail


def python(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=CWD,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def wall(cmd: list[str], env: dict | None = None) -> float:
    """Seconds a command takes; raises with its stderr if it fails."""
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=CWD)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return seconds


def quickstart(benchmark: str, out: Path) -> list[Row]:
    """Cold run from empty caches and store, then a warm ``--rerun``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {
            "OEBENCH_CACHE_DIR": f"{tmp}/cache",
            "OEBENCH_STORE": f"{tmp}/store.sqlite",
            "XDG_CACHE_HOME": f"{tmp}/xdg-cache",
            "OEBENCH_DATA_ROOT": f"{tmp}/data",
        }
        cli = [sys.executable, "-m", "oebench.cli", "run", benchmark]
        cold = wall([*cli, "--csv", str(out / "quickstart.csv")], env)
        with sqlite3.connect(f"{tmp}/store.sqlite") as db:
            train, score = db.execute(
                "SELECT SUM(train_seconds), SUM(score_seconds) FROM cells"
            ).fetchone()
        warm = min(wall([*cli, "--rerun", "--csv", f"{tmp}/warm.csv"], env) for _ in range(2))
        same = (out / "quickstart.csv").read_bytes() == Path(f"{tmp}/warm.csv").read_bytes()
    return [
        ("cold quickstart", f"{cold:.1f} s", f"training {train:.1f} s, scoring {score:.1f} s"),
        ("warm rerun (--rerun)", f"{warm:.2f} s", f"best of 2; CSV same as cold: {same}"),
    ]


CROPS = """
import hashlib, json, time
import oebench_plugins.images as im
t0 = time.perf_counter(); pictures = im._photos(); im._textures(); t1 = time.perf_counter()
photos = im.photo_crops().load("train", shape=(1, 28, 28), seed=0).images
t2 = time.perf_counter()
textures = im.texture_crops().load("test", shape=(1, 28, 28), seed=0).images
t3 = time.perf_counter()
if OUT:
    import torch
    torch.save({"photos": photos, "textures": textures}, OUT + "/crops.pt")
digest = hashlib.sha256(photos.numpy().tobytes() + textures.numpy().tobytes()).hexdigest()
print(json.dumps({"pictures": t1 - t0, "photos": t2 - t1, "textures": t3 - t2,
                  "n": len(photos), "digest": digest[:12]}))
"""


def crops(out: Path) -> list[Row]:
    r = python(f"OUT = {str(out)!r}\n" + CROPS)
    return [
        ("crops: load pictures", f"{r['pictures']:.2f} s", "16 photos + 3 textures, once"),
        ("crops: 20k photo crops", f"{r['photos']:.2f} s", f"1x28x28, sha256 {r['digest']}"),
        ("crops: 1k texture crops", f"{r['textures']:.2f} s", "1x28x28"),
    ]


ODIN = """
import json, time
import numpy as np, torch
import oebench
from oebench.contracts.model import Classifier
torch.manual_seed(0)
model = Classifier(oebench.create_model("small-cnn", 10, (1, 28, 28)), (0.1307,), (0.3081,))
model.eval()
images = torch.rand(13000, 1, 28, 28, generator=torch.Generator().manual_seed(1))
det = oebench.create_detector("odin")
det.score_inputs(model, iter([images[:500]]))  # warm-up
t0 = time.perf_counter()
scores = det.score_inputs(model, (images[i : i + 500] for i in range(0, len(images), 500)))
seconds = time.perf_counter() - t0
if OUT:
    np.save(OUT + "/odin.npy", scores)
print(json.dumps({"seconds": seconds, "n": len(images)}))
"""


def odin(out: Path) -> list[Row]:
    r = python(f"OUT = {str(out)!r}\n" + ODIN)
    rate = r["n"] / r["seconds"]
    return [("ODIN, 13k images (1 cell)", f"{r['seconds']:.2f} s", f"{rate:,.0f} images/s")]


HEAVY = ("torch", "numpy", "pandas", "sklearn", "scipy", "matplotlib", "datasets", "PIL", "rich")


def imports() -> list[Row]:
    """``import oebench.cli`` (minus a bare interpreter) and ``oebench --help``."""
    bare = min(wall([sys.executable, "-c", "pass"]) for _ in range(3))
    imp = min(wall([sys.executable, "-c", "import oebench.cli"]) for _ in range(3))
    help_ = min(wall([sys.executable, "-m", "oebench.cli", "--help"]) for _ in range(3))
    loaded = python(
        f"import json, sys, oebench.cli; print(json.dumps([m for m in {HEAVY!r} "
        "if m in sys.modules]))"
    )
    return [
        ("import oebench.cli", f"{imp - bare:.2f} s", f"heavy modules: {loaded or 'none'}"),
        ("oebench --help", f"{help_:.2f} s", f"whole process; bare python {bare:.2f} s"),
    ]


METRICS = """
import json, time
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from oebench.metrics import ood_metrics
rng = np.random.default_rng(0)
ids, oods = rng.normal(0, 1, 500_000), rng.normal(1, 1, 500_000)
y, s = np.r_[np.zeros(ids.size), np.ones(oods.size)], np.r_[ids, oods]

def sk():
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"auroc": 100 * roc_auc_score(y, s), "aupr_out": 100 * average_precision_score(y, s),
            "fpr95": 100 * fpr[np.argmin(np.abs(tpr - 0.95))]}

def best(f):
    times = []
    for _ in range(3):
        t0 = time.perf_counter(); value = f(); times.append(time.perf_counter() - t0)
    return min(times), value

t_sk, ref = best(sk)
t_ours, ours = best(lambda: ood_metrics(ids, oods))
diff = max(abs(ours[k] - ref[k]) for k in ref)
print(json.dumps({"sk": t_sk, "ours": t_ours, "diff": diff}))
"""


def metrics() -> list[Row]:
    r = python(METRICS)
    ratio = r["sk"] / r["ours"]
    return [
        ("metrics, 1M scores", f"{r['ours']:.3f} s", "all six metrics, best of 3"),
        (
            "  scikit-learn 3 calls",
            f"{r['sk']:.3f} s",
            f"ratio {ratio:.1f}x, max |diff| {r['diff']:.1e} (AUROC, AUPR-Out, FPR95)",
        ),
    ]


def detectors() -> list[Row]:
    script = HERE / "perf_detectors_memory.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=CWD)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    rows: list[Row] = []
    for line in out.stdout.splitlines()[2:]:
        name, fit, score, peak, extra = line.split()
        rows.append(
            (
                f"detector {name}",
                f"{float(fit) + float(score):.2f} s",
                f"fit {fit} + score {score} s; peak RSS {peak} MiB (+{extra})",
            )
        )
    total = sum(float(r[1].split()[0]) for r in rows)
    return [("detectors, 50k x 512 (all)", f"{total:.1f} s", f"{len(rows)} detectors"), *rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="quickstart", help="name or .toml path")
    p.add_argument("--out", help="keep the quickstart CSV, crops and ODIN scores here")
    p.add_argument("--skip", action="append", default=[], choices=PARTS)
    args = p.parse_args()
    keep = Path(args.out) if args.out else Path(tempfile.mkdtemp())
    keep.mkdir(parents=True, exist_ok=True)
    where = python("import json, oebench; print(json.dumps(oebench.__file__))")
    print(
        f"oebench from {Path(where).parent}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(f"{'measurement':30}  {'value':>9}  detail", flush=True)
    steps = {
        "quickstart": lambda: quickstart(args.benchmark, keep),
        "crops": lambda: crops(keep),
        "odin": lambda: odin(keep),
        "imports": imports,
        "metrics": metrics,
        "detectors": detectors,
    }
    for part in PARTS:
        if part not in args.skip:
            for name, value, detail in steps[part]():  # each part's rows as soon as it ends
                print(f"{name:30}  {value:>9}  {detail}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if not args.out:
        shutil.rmtree(keep, ignore_errors=True)
    shutil.rmtree(CWD, ignore_errors=True)


if __name__ == "__main__":
    main()
