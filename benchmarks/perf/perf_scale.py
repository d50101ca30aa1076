"""ImageNet-scale detector fits with bounded memory: fit + score seconds and peak RSS (issue 25).

Synthetic ID-train outputs at ImageNet scale (class-clustered non-negative float32 features,
float32 logits of a nearest-class-mean-like linear head, int64 labels; C = 1,000 classes) are
written once, block by block, to ``.npy`` files in a work folder. Each fitted detector is then
fitted on them and scores a test set (half ID, half shifted), three ways side by side:

- ``streaming``: the files memory-mapped read only (``oebench.contracts.arrays.load_rows``), as
  the engine hands them to detectors at this scale;
- ``in-memory``: the arrays the detector reads loaded fully into RAM (``np.load``) before the fit;
- ``pytorch-ood``: pytorch-ood's implementation of the detector, where it has one, on torch
  tensors of the in-memory arrays.

Every (size, detector, way) runs in its own fresh interpreter, which reports the fit and score
wall seconds, the RSS just before the fit (after imports and, in-memory, after loading) and the
peak RSS of fit + score, so that the fit's own increment shows. File-backed mapped pages count
in RSS; the engine lets them go after each row block (``release_pages``), so the streaming peak
reflects what the fit holds. A run past ``--timeout``, or whose RSS passes ``--max-rss`` (default
80% of the RAM available at the start), is killed and recorded; in-memory and pytorch-ood runs
are skipped when 2 x the loaded arrays would exceed 80% of the available RAM.

    python benchmarks/perf/perf_scale.py                 # the issue's sizes (hours; ~20 GB disk)
    python benchmarks/perf/perf_scale.py --quick         # smoke check: 20,000 x 64, C = 10
    python benchmarks/perf/perf_scale.py --sizes 50000x512 --classes 100 --test 2000 \\
        --detectors knn vim --ways streaming in-memory --name scale-50k

Tables (one per size) go to stdout and ``--out``/``NAME.md`` with ``NAME.json`` (default
``benchmarks/perf/results/scale``; ``scale-quick`` with ``--quick``), headed by the platform.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from oebench.core.arrayfiles import load_rows, release_pages

HERE = Path(__file__).resolve().parent
GIB = 1024**3
MIB = 1024**2
BLOCK = 8192
WAYS = ("streaming", "in-memory", "pytorch-ood")
#: the issue's sizes: N x d (C from --classes)
SIZES = ("100000x512", "500000x512", "1280000x512", "200000x2048")
#: the issue's detectors, then every other registered detector with "fit" (no model) that fits
#: in a few seconds at 50,000 x 512 here
DETECTORS = (
    "mahalanobis",
    "relative-mahalanobis",
    "vim",
    "gmm",
    "knn",
    "nnguide",
    "she",
    "kl-matching",
    "openmax",
    "react",
    "dice",
    "bats",
    "fdbd",
    "max-cosine",
    "residual",
    "nci",
    "pnml",
    "temp-scale",
    "vra",
    "ssd",
    "nrg",
    "nac-ue",
    "igeood",
)
ALIASES = {"rmd": "relative-mahalanobis", "kl_matching": "kl-matching", "klmatching": "kl-matching"}
#: options differing from the registered defaults, where the paper's ImageNet setting is known
IMAGENET_OPTIONS = {"knn": {"k": 1000}}  # Sun et al. 2022, ImageNet (full train set)


# -- memory ------------------------------------------------------------------------------------
def _status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A ``/proc/PID/status`` memory field (VmRSS, VmHWM) in bytes, where Linux provides it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_ram() -> int:
    """Bytes of RAM available now."""
    from oebench.execute.memory import available_memory

    return available_memory("cpu")


def total_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# -- files -----------------------------------------------------------------------------------
def _open_rows(path: Path, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A new ``.npy`` file memory-mapped for writing."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


# -- data --------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    n, _, d = text.lower().partition("x")
    return int(float(n)), int(d)


def size_label(n: int, d: int) -> str:
    return f"{n:,} x {d}"


def make_data(folder: Path, n: int, d: int, classes: int, n_test: int, seed: int) -> dict:
    """Write the train/test arrays and the head to ``folder`` block by block (never N x d in
    memory); reuse them when ``meta.json`` says they were written with the same settings."""
    meta = {"n": n, "d": d, "classes": classes, "test": n_test, "seed": seed, "version": 1}
    done = folder / "meta.json"
    if done.exists() and json.loads(done.read_text()).get("meta") == meta:
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, d))
    spread = rng.uniform(0.5, 2.0, size=d)
    centres = np.abs(means)
    weight = (centres / 4).astype(np.float32)  # nearest class mean, as detector_kit.parity_split
    bias = (-(centres**2).sum(1) / 8).astype(np.float32)
    np.save(folder / "head_weight.npy", weight)
    np.save(folder / "head_bias.npy", bias)

    def write(prefix: str, rows: int, shifted_from: int | None) -> None:
        feats = _open_rows(folder / f"{prefix}_features.npy", (rows, d), np.float32)
        logits = _open_rows(folder / f"{prefix}_logits.npy", (rows, classes), np.float32)
        labels = _open_rows(folder / f"{prefix}_labels.npy", (rows,), np.int64)
        for b, start in enumerate(range(0, rows, BLOCK)):
            r = np.random.default_rng([seed, 1 if prefix == "train" else 2, b])
            m = min(BLOCK, rows - start)
            y = r.integers(0, classes, size=m)
            x = means[y] + r.normal(size=(m, d)) * spread
            if shifted_from is not None:  # second half of the test set: a shifted distribution
                rows_idx = np.arange(start, start + m)
                ood = rows_idx >= shifted_from
                x[ood] = 0.3 * means[y[ood]] + 1.5 * r.normal(size=(int(ood.sum()), d)) + 0.5
            x = np.abs(x).astype(np.float32)
            feats[start : start + m] = x
            logits[start : start + m] = x @ weight.T + bias
            labels[start : start + m] = y
            if b % 16 == 15:
                for a in (feats, logits, labels):
                    a.flush()
                    release_pages(a)
        for a in (feats, logits, labels):
            a.flush()
        del feats, logits, labels

    write("train", n, None)
    write("test", n_test, n_test // 2)
    info = {"meta": meta, "generate_s": time.perf_counter() - t0}
    done.write_text(json.dumps(info))
    return info


# -- one measurement (in its own process) ------------------------------------------------------
def _fc(weight, bias):
    import torch
    from torch import nn

    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.as_tensor(weight))
        fc.bias.copy_(torch.as_tensor(bias))
    return fc


def pood_detector(name: str, options: dict, weight, bias, d: int):
    """(fit(x, z, y), score(xt, zt), options used) for pytorch-ood's implementation of ``name``,
    or a string saying why there is none."""
    try:
        import pytorch_ood.detector as pood
    except ImportError as e:
        return f"n/a (pytorch-ood not importable: {e})"
    fc = _fc(weight, bias)
    w, b = fc.weight, fc.bias

    def feats(det, fit="fit_features", predict="predict_features", labels=True):
        def f(x, z, y):
            getattr(det, fit)(x, y) if labels else getattr(det, fit)(x)

        return f, lambda x, z: getattr(det, predict)(x)

    def logits(det, labels=True):
        def f(x, z, y):
            det.fit_logits(z, y) if labels else det.fit_logits(z)

        return f, lambda x, z: det.predict_logits(z)

    if name == "mahalanobis":
        return (*feats(pood.Mahalanobis(None)), {})
    if name == "relative-mahalanobis":
        return (*feats(pood.RMD(None)), {})
    if name == "vim":
        from oebench_plugins.feature_head import vim_default_dim

        dim = options.get("dim") or vim_default_dim(d)
        return (*feats(pood.ViM(None, d=dim, w=w, b=b)), {"d": dim})
    if name == "gmm":
        return (*feats(pood.GMM(None)), {})
    if name == "knn":
        k = options.get("k", 50)
        return (*feats(pood.KNN(None, k=k)), {"k": k})
    if name == "nnguide":
        k = options.get("k", 100)
        return (*feats(pood.NNGuide(None, fc, k=k)), {"k": k})
    if name == "she":
        return (*feats(pood.SHE(None, fc)), {})
    if name == "kl-matching":
        return (*logits(pood.KLMatching(None), labels=False), {})
    if name == "openmax":
        eu, cos = options.get("eu_weight", 0.005), options.get("cos_weight", 1.0)
        share = eu / (eu + cos)  # pytorch-ood: weights eu and 1 - eu (same ranking up to scale)
        det = pood.OpenMax(
            None, tailsize=options.get("tail_size", 20), alpha=10, euclid_weight=share
        )
        return (*logits(det), {"tailsize": 20, "alpha": 10, "euclid_weight": round(share, 6)})
    if name == "react":
        p = options.get("percentile", 90.0) / 100
        det = pood.ReAct(None, head=fc, percentile=p)
        return (*feats(det, "fit_feature_maps", "predict_feature_maps"), {"percentile": p})
    if name == "dice":
        p = options.get("percentile", 90.0) / 100
        return (*feats(pood.DICE(None, w=w, b=b, p=p)), {"p": p})
    if name == "fdbd":
        return (*feats(pood.fDBD(None, fc), labels=False), {})
    if name == "nci":
        alpha = options.get("alpha", 1e-4)
        return (*feats(pood.NCI(None, fc, alpha=alpha), labels=False), {"alpha": alpha})
    if name == "pnml":
        return (*feats(pood.PNML(None, fc)), {})
    if name == "temp-scale":
        return (*logits(pood.TemperatureScaling(None)), {})
    if name == "vra":
        lo, hi = options.get("lower", 60.0) / 100, options.get("upper", 90.0) / 100
        det = pood.VRA(None, fc, lower_percentile=lo, upper_percentile=hi)
        opts = {"lower_percentile": lo, "upper_percentile": hi, "note": "clips below"}
        return (*feats(det, "fit_feature_maps", "predict_feature_maps"), opts)
    if name == "nac-ue":
        return "n/a (pytorch-ood's NACUE needs the model's layers, not features)"
    return "n/a (no pytorch-ood implementation)"


def measure(spec: dict) -> dict:
    """Fit and score one detector one way in this process; seconds and bytes in a dict."""
    import torch

    import oebench.api as api

    torch.set_grad_enabled(False)
    folder, name, way, options = Path(spec["folder"]), spec["detector"], spec["way"], spec["opts"]
    det = api.create_detector(name, **options)
    needs = det.needs
    weight, bias = np.load(folder / "head_weight.npy"), np.load(folder / "head_bias.npy")
    head = api.Head(weight, bias)

    def arrays(prefix: str, full: bool):
        out = {}
        for part in ("logits", "features", "labels"):
            path = folder / f"{prefix}_{part}.npy"
            # in memory: the arrays the detector reads (labels always); the rest stay mapped
            wanted = full and (part == "labels" or part in needs)
            out[part] = np.load(path) if wanted else load_rows(path)
        return out

    test = arrays("test", True)
    train = arrays("train", way != "streaming")
    result: dict = {"needs": sorted(needs)}
    if way == "pytorch-ood":
        made = pood_detector(name, options, weight, bias, weight.shape[1])
        if isinstance(made, str):
            return result | {"status": made}
        fit, score, used = made
        result["pood_options"] = used
        t = {k: torch.from_numpy(np.asarray(v)) for k, v in train.items()}
        tt = {k: torch.from_numpy(np.asarray(v)) for k, v in test.items()}

        def do_fit():
            fit(t["features"], t["logits"], t["labels"])

        def do_score():
            return score(tt["features"], tt["logits"]).double().numpy()
    else:
        outputs = api.Outputs(train["logits"], train["features"], train["labels"])
        tests = api.Outputs(test["logits"], test["features"], test["labels"])

        def do_fit():
            det.fit(outputs if "fit" in needs else None, head if "head" in needs else None)

        def do_score():
            return np.asarray(det.score(tests))

    reset = _reset_peak()
    before = _status_bytes("VmRSS") or 0
    t0 = time.perf_counter()
    do_fit()
    t1 = time.perf_counter()
    scores = do_score()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm = _status_bytes("VmHWM")
    if reset and hwm is not None:
        peak = hwm  # peak since just before the fit
    n_test = len(test["labels"])
    finite = bool(np.isfinite(scores).all()) and scores.shape == (n_test,)
    half = n_test // 2
    auroc = None
    if finite and 0 < half < n_test:
        from oebench.metrics import ood_metrics

        auroc = float(ood_metrics(scores[:half], scores[half:])["auroc"])
    return result | {
        "status": "ok" if finite else f"scores not finite or shape {scores.shape}",
        "fit_s": t1 - t0,
        "score_s": t2 - t1,
        "rss_before_fit": before,
        "peak_rss": peak,
        "rss_increment": max(peak - before, 0),
        "peak_since_fit": reset,
        "auroc": auroc,
        "threads": torch.get_num_threads(),
    }


def one(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        out = measure(spec)
    except BaseException as e:  # noqa: BLE001  (any failure is a row of the table)
        tb = traceback.format_exc().strip().splitlines()
        out = {"status": f"error: {type(e).__name__}: {str(e)[:300]}", "traceback": tb[-6:]}
    print("@@RESULT " + json.dumps(out), flush=True)


# -- the driver --------------------------------------------------------------------------------
def run_one(spec: dict, timeout: float, max_rss: int) -> dict:
    """``spec`` in a fresh interpreter, killed past ``timeout`` s or ``max_rss`` bytes."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        why, seen = None, 0
        while proc.poll() is None:
            time.sleep(0.2)
            rss = _status_bytes("VmRSS", proc.pid) or 0
            seen = max(seen, rss)
            if time.perf_counter() - start > timeout:
                why = f"timeout (> {timeout:.0f} s)"
            elif rss > max_rss:
                why = f"killed: RSS {rss / GIB:.1f} GiB > limit {max_rss / GIB:.1f} GiB"
            if why:
                os.killpg(proc.pid, 9)
                proc.wait()
                break
        out.seek(0)
        text = out.read()
    wall = time.perf_counter() - start
    if why:
        return {"status": f"{why}; highest RSS seen {seen / GIB:.2f} GiB", "wall_s": wall}
    for line in reversed(text.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT ") :]) | {"wall_s": wall}
    tail = " | ".join(text.strip().splitlines()[-3:])[-300:]
    return {"status": f"error: exit {proc.returncode}: {tail}", "wall_s": wall}


def platform_lines(args, argv: list[str]) -> dict:
    import torch

    from oebench.core.platforms import cpu_model

    try:
        import pytorch_ood

        pood_version = pytorch_ood.__version__
    except ImportError:
        pood_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/perf/perf_scale.py", *argv]),
        "cpu": cpu_model()[0],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(total_ram() / GIB, 1),
        "available_ram_gib": round(available_ram() / GIB, 1),
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": str(torch.__version__),
        "pytorch_ood": pood_version,
        "oebench": str(Path(__import__("oebench").__file__).parent),
    }


def fmt_s(r: dict, key: str) -> str:
    return f"{r[key]:.2f}" if isinstance(r.get(key), float) else "-"


def fmt_b(r: dict, key: str) -> str:
    v = r.get(key)
    if not isinstance(v, int):
        return "-"
    return f"{v / GIB:.2f} GiB" if v >= GIB else f"{v / MIB:.0f} MiB"


def table(size: dict, rows: list[dict]) -> str:
    head = (
        f"### N = {size['n']:,}, d = {size['d']}, C = {size['classes']:,}, test {size['test']:,}"
        f" (data written in {size.get('generate_s', 0):.0f} s)\n\n"
        "| detector | way | fit s | score s | peak RSS | RSS increment | notes |\n"
        "|---|---|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        notes = [] if r["status"] == "ok" else [r["status"].replace("|", "/")]
        opts = r.get("pood_options") if r["way"] == "pytorch-ood" else r.get("options")
        if opts:
            notes.append(", ".join(f"{k}={v}" for k, v in opts.items()))
        if r.get("auroc") is not None:
            notes.append(f"AUROC {r['auroc']:.1f}")
        if r.get("rss_before_fit"):
            notes.append(f"RSS before fit {fmt_b(r, 'rss_before_fit')}")
        lines.append(
            f"| {r['detector']} | {r['way']} | {fmt_s(r, 'fit_s')} | {fmt_s(r, 'score_s')} | "
            f"{fmt_b(r, 'peak_rss')} | {fmt_b(r, 'rss_increment')} | {'; '.join(notes)} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="N x d, e.g. 100000x512")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--test", type=int, default=10_000, help="test rows (half ID, half shifted)")
    p.add_argument("--detectors", nargs="+", default=list(DETECTORS))
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    p.add_argument("--work", help="folder for the .npy files (default: under the temp dir)")
    p.add_argument("--keep-data", action="store_true", help="keep the .npy files afterwards")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--max-rss", type=float, help="GiB per run (default 80%% of available RAM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke check: 20,000 x 64, C = 10")
    p.add_argument("--out", default=str(HERE / "results"), help="folder of NAME.md / NAME.json")
    p.add_argument("--name", help="file name stem (default scale, scale-quick with --quick)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one(args.one)
        return
    if args.quick:
        args.sizes, args.classes, args.test = ["20000x64"], 10, 1000
    name = args.name or ("scale-quick" if args.quick else "scale")
    work = Path(args.work or Path(tempfile.gettempdir()) / "oebench-perf-scale")
    avail = available_ram()
    max_rss = int(args.max_rss * GIB) if args.max_rss else int(0.8 * avail)
    info = platform_lines(args, argv)
    info["max_rss_gib"] = round(max_rss / GIB, 1)
    header = (
        "# oebench scale benchmark (issue 25): fit + score with bounded memory\n\n"
        f"`{info['command']}`\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in info.items() if k != "command")
        + "\n\npeak RSS: fit + score, since just before the fit; RSS increment: peak minus the "
        "RSS just before the fit (after imports and, in-memory, loading).\n"
    )
    print(header, flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"platform": info, "sizes": []}
    parts = [header]

    def save() -> None:
        (out_dir / f"{name}.md").write_text("\n".join(parts))
        (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")

    import oebench.api as api

    registered = set(api.list_detectors())
    for text in args.sizes:
        n, d = parse_size(text)
        folder = work / f"n{n}-d{d}-c{args.classes}-t{args.test}-s{args.seed}"
        gen = make_data(folder, n, d, args.classes, args.test, args.seed)
        size = {"n": n, "d": d, "classes": args.classes, "test": args.test, **gen}
        rows: list[dict] = []
        results["sizes"].append({"size": size, "rows": rows})
        print(f"N = {n:,} x d = {d} (C = {args.classes}): data in {folder}", flush=True)
        for det in args.detectors:
            det = ALIASES.get(det, det)
            options = IMAGENET_OPTIONS.get(det, {}) if det in registered else {}
            for way in args.ways:
                row = {"detector": det, "way": way, "options": options}
                if det not in registered:
                    row["status"] = "error: not a registered detector"
                else:
                    needs = api.create_detector(det, **options).needs
                    if "model" in needs or "fit" not in needs:
                        row["status"] = f"skipped (needs {sorted(needs)})"
                    else:
                        width = d * ("features" in needs) + args.classes * ("logits" in needs)
                        # the arrays loaded and one working copy; the --max-rss guard
                        # stops a run that needs more
                        need = 2 * 4 * n * max(width, 1)
                        if way != "streaming" and need > 0.8 * avail:
                            row["status"] = f"skipped (would need {need / GIB:.1f} GiB)"
                        else:
                            spec = {"folder": str(folder), "detector": det, "way": way}
                            row |= run_one(spec | {"opts": options}, args.timeout, max_rss)
                rows.append(row)
                r = row
                print(
                    f"  {det:22} {way:12} fit {fmt_s(r, 'fit_s'):>8} score "
                    f"{fmt_s(r, 'score_s'):>7} peak {fmt_b(r, 'peak_rss'):>10} "
                    f"+{fmt_b(r, 'rss_increment'):>10}  {r['status'][:120]}",
                    flush=True,
                )
                parts[1:] = [table(s["size"], s["rows"]) for s in results["sizes"]]
                save()
        if not args.keep_data:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n" + "\n".join(parts[1:]))
    print(f"written: {out_dir / (name + '.md')} and .json")


if __name__ == "__main__":
    main()
