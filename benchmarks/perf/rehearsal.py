"""Dress rehearsal of the paper benchmarks at their real data size on this machine (issue 21).

    python benchmarks/perf/rehearsal.py                          # full size, all three
    python benchmarks/perf/rehearsal.py --benchmarks oe-cifar10  # one of them
    python benchmarks/perf/rehearsal.py --scale 0.01             # 1/100 of every dataset

Writes synthetic data in the exact on-disk formats the loaders read, at the real sizes times
``--scale``, into ``--data-root`` (kept and reused: a dataset whose marker file says it was
written at this scale is not written again): CIFAR-10 / CIFAR-100 python pickles, SVHN
``.mat`` files (train 73,257, test 26,032, extra 531,131: ``oe-svhn`` trains on train +
extra), DTD (5,640 JPEGs of 300-640 px in 47 class folders, the 10 partitions' label lists),
Places365's small validation set (36,500 JPEGs of 256 px, category and file lists), LSUN
(10,000 JPEGs), Icons-50 (10,000 PNGs in 50 class folders, ``numbers`` among them),
Chars74K (12,503 PNGs, good and bad images) and the 300K Random Images ``.npy``
(300,000 x 32 x 32 x 3 uint8). torchvision checks CIFAR's, SVHN's and Places365's files
against its pinned MD5s, which synthetic files cannot match: the run computes each MD5 as
torchvision does (so its cost is measured) and accepts the file.

Then each benchmark runs UNMODIFIED except through ``oebench run --set`` overrides (one epoch
per training, ``training.max_train`` ID images; at a scale below 1 the synthetic OOD sets'
``n`` too), in a subprocess of its own with a cold cache and store, on the CPU. The
subprocess records per phase (finding + hashing data files, loading each split, every
training step, the forward pass over each set, each detector's fit and score, the metrics,
the store) wall seconds and peak RSS (sampled every 50 ms, plus ``ru_maxrss``), prints a
table, projects the full recipe's time on this machine (measured seconds per training step x
the recipe's steps, plus the measured evaluation) and writes
``benchmarks/perf/results/rehearsal-<machine>-<date>.json`` (after each benchmark).
``setup`` is everything outside the named phases (imports, checks, building models, what
lies between phases). ``--time-limit S`` stops a benchmark after S seconds and keeps what
its last snapshot (every 10 s) measured: the projection then uses the forward passes'
measured seconds per image for every test image. A full run reaches the OE fine-tune only
after its baseline cell's ~100k test images; ``--probe-training BENCH --out FILE`` measures
the fine-tune's loads and steps at full size alone. ``--summarise JSON`` redoes a report's
projections and tables. Other work on the machine distorts the figures: the load average is
recorded beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("oe-cifar10", "oe-svhn", "oe-cifar100")
#: each benchmark's datasets (ID and OOD) and outlier files
NEEDS = {
    "oe-cifar10": ("cifar10", "dtd", "svhn", "places365", "lsun", "cifar100", "300k"),
    "oe-cifar100": ("cifar100", "dtd", "svhn", "places365", "lsun", "cifar10", "300k"),
    "oe-svhn": ("svhn", "dtd", "places365", "lsun", "cifar10", "icons50", "chars74k", "300k"),
}
#: the real sizes
SIZES = {
    "cifar_train": 50_000, "cifar_test": 10_000, "svhn_train": 73_257, "svhn_test": 26_032,
    "svhn_extra": 531_131, "dtd_per_class": 120, "places_val": 36_500, "lsun": 10_000,
    "icons_per_class": 200, "chars_good": 7_705, "chars_bad": 4_798, "random_300k": 300_000,
}  # fmt: skip
SYNTHETIC_N = 10_000  # the files' `n` of gaussian, rademacher and blobs


# -- synthetic data in the exact formats --------------------------------------------------------
def _n(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def tiny_images(n: int, classes: Any, seed: int) -> Any:
    """(n, 32, 32, 3) uint8: a colour per class plus smooth noise (8x8 upsampled) and grain."""
    import numpy as np

    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(1234).integers(40, 216, (int(classes.max()) + 1, 1, 1, 3))
    out = np.empty((n, 32, 32, 3), np.uint8)
    for start in range(0, n, 50_000):
        k = min(50_000, n - start)
        low = rng.integers(-60, 60, (k, 8, 8, 3), dtype=np.int16)
        smooth = low.repeat(4, axis=1).repeat(4, axis=2)
        grain = rng.integers(-12, 12, (k, 32, 32, 3), dtype=np.int16)
        x = colours[classes[start : start + k]] + smooth + grain
        out[start : start + k] = np.clip(x, 0, 255).astype(np.uint8)
    return out


def write_cifar(root: Path, scale: float, hundred: bool) -> None:
    import numpy as np

    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    classes = 100 if hundred else 10
    key = "fine_labels" if hundred else "labels"
    n_train, n_test = _n(SIZES["cifar_train"], scale), _n(SIZES["cifar_test"], scale)
    if hundred:
        parts = {"train": n_train, "test": n_test}
    else:
        per = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
        parts = {f"data_batch_{i + 1}": per[i] for i in range(5)} | {"test_batch": n_test}
    for i, (name, n) in enumerate(parts.items()):
        labels = np.random.default_rng(100 + i + 10 * hundred).integers(0, classes, n)
        data = tiny_images(n, labels, seed=i + 10 * hundred).transpose(0, 3, 1, 2).reshape(n, -1)
        entry = {"batch_label": name, key: labels.tolist(), "data": data,
                 "filenames": [f"img_{k:06d}.png" for k in range(n)]}  # fmt: skip
        if hundred:
            entry["coarse_labels"] = (labels // 5).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = (
        {"fine_label_names": [f"fine{k}" for k in range(100)],
         "coarse_label_names": [f"coarse{k}" for k in range(20)]}
        if hundred else {"label_names": [f"class{k}" for k in range(10)], "num_cases_per_batch":
                         10000, "num_vis": 3072}
    )  # fmt: skip
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)


def write_svhn(root: Path, scale: float) -> None:
    import numpy as np
    from scipy.io import savemat

    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "test", "extra")):
        n = _n(SIZES[f"svhn_{split}"], scale)
        labels = np.random.default_rng(200 + i).integers(1, 11, n)  # 1..10, 10 is digit 0
        x = tiny_images(n, labels % 10, seed=20 + i)
        # (32, 32, 3, N) uint8 as in the published files; y (N, 1)
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y":
                labels.astype(np.uint8).reshape(-1, 1)})  # fmt: skip
        del x


def _photo(rng: Any, height: int, width: int) -> Any:
    """A PIL RGB image: coarse random colours upsampled smoothly, plus grain."""
    import numpy as np
    from PIL import Image

    low = rng.integers(0, 256, (rng.integers(3, 12), rng.integers(3, 12), 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((width, height), Image.BILINEAR)
    grain = rng.integers(-10, 10, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8))


def write_dtd(root: Path, scale: float) -> None:
    import numpy as np

    data = root / "dtd" / "dtd"
    rng = np.random.default_rng(3)
    per = _n(SIZES["dtd_per_class"], scale)
    names = []
    for c in range(47):
        cls = f"texture{c:02d}"
        (data / "images" / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per):
            h, w = (int(v) for v in rng.integers(300, 641, 2))
            name = f"{cls}_{k:04d}.jpg"
            _photo(rng, h, w).save(data / "images" / cls / name, quality=90)
            names.append(f"{cls}/{name}")
    (data / "labels").mkdir(parents=True, exist_ok=True)
    for p in range(1, 11):  # each partition splits every class's images into thirds
        order = np.random.default_rng(p).permutation(len(names))
        for s, split in enumerate(("train", "val", "test")):
            picked = sorted(names[i] for i in order if i % 3 == s)
            (data / "labels" / f"{split}{p}.txt").write_text("".join(f"{n}\n" for n in picked))
    (data / "labels" / "labels_joint_anno.txt").write_text("".join(f"{n}\n" for n in names))


def write_places(root: Path, scale: float) -> None:
    import numpy as np

    top = root / "places365"
    (top / "val_256").mkdir(parents=True, exist_ok=True)
    (top / "categories_places365.txt").write_text(
        "".join(f"/c/category{k:03d} {k}\n" for k in range(365))
    )
    rng = np.random.default_rng(4)
    n = _n(SIZES["places_val"], scale)
    lines = []
    for k in range(1, n + 1):
        name = f"Places365_val_{k:08d}.jpg"
        _photo(rng, 256, 256).save(top / "val_256" / name, quality=90)
        lines.append(f"{name} {int(rng.integers(0, 365))}\n")
    (top / "places365_val.txt").write_text("".join(lines))


def write_folder_images(folder: Path, n: int, seed: int, sizes: tuple[int, int], ext: str) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(*sizes, 2))
        _photo(rng, h, w).save(folder / f"{k:06d}.{ext}")


def write_lsun(root: Path, scale: float) -> None:
    write_folder_images(root / "lsun", _n(SIZES["lsun"], scale), 5, (256, 400), "jpg")


def write_icons(root: Path, scale: float) -> None:
    per = _n(SIZES["icons_per_class"], scale)
    classes = ["numbers"] + [f"icon{c:02d}" for c in range(49)]
    for c, cls in enumerate(classes):
        write_folder_images(root / "Icons-50" / cls, per, 600 + c, (100, 140), "png")


def write_chars(root: Path, scale: float) -> None:
    for part, count, seed in (("GoodImg", "chars_good", 7), ("BadImag", "chars_bad", 8)):
        total = _n(SIZES[count], scale)
        for s in range(62):
            n = total // 62 + (1 if s < total % 62 else 0)
            if n:
                folder = root / "Chars74K" / part / "Bmp" / f"Sample{s + 1:03d}"
                write_folder_images(folder, n, seed * 100 + s, (20, 150), "png")


def write_300k(root: Path, scale: float) -> None:
    import numpy as np

    n = _n(SIZES["random_300k"], scale)
    path = root / "300K_random_images.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    for start in range(0, n, 50_000):
        k = min(50_000, n - start)
        classes = np.random.default_rng(start).integers(0, 50, k)
        out[start : start + k] = tiny_images(k, classes, seed=900 + start)
    out.flush()
    del out


WRITERS = {
    "cifar10": lambda r, s: write_cifar(r, s, False),
    "cifar100": lambda r, s: write_cifar(r, s, True),
    "svhn": write_svhn, "dtd": write_dtd, "places365": write_places, "lsun": write_lsun,
    "icons50": write_icons, "chars74k": write_chars, "300k": write_300k,
}  # fmt: skip


def ensure_data(root: Path, scale: float, names: list[str]) -> dict[str, float]:
    """Write each dataset unless its marker says it was written at ``scale``; seconds each."""
    root.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name in names:
        marker = root / f".rehearsal-{name}"
        if marker.is_file() and marker.read_text() == repr(scale):
            continue
        start = time.perf_counter()
        WRITERS[name](root, scale)
        marker.write_text(repr(scale))
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"wrote {name} at scale {scale} in {seconds[name]:.1f} s", file=sys.stderr)
    return seconds


# -- the run, in a subprocess: phases, steps and RSS ---------------------------------------------
def _rss_now() -> int:
    import psutil

    proc = psutil.Process()
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


class Phases:
    """Nested phases of the run: self seconds, calls, items and peak RSS per phase name (the
    innermost phase owns the time and the memory samples)."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, float]] = [("setup", time.perf_counter())]
        self.stats: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.peak = 0
        self.t0 = time.perf_counter()
        #: (seconds since the start, phase entered, RSS then in MiB), in order
        self.events: list[tuple[float, str, int]] = []

    def _stat(self, name: str) -> dict[str, Any]:
        return self.stats.setdefault(
            name, {"seconds": 0.0, "calls": 0, "items": 0, "peak_rss_bytes": 0}
        )

    def _account(self, now: float) -> None:
        name, since = self.stack[-1]
        self._stat(name)["seconds"] += now - since
        self.stack[-1] = (name, now)

    def enter(self, name: str) -> None:
        with self.lock:
            self._account(time.perf_counter())
            self.stack.append((name, time.perf_counter()))
            self._stat(name)["calls"] += 1
            now = round(time.perf_counter() - self.t0, 2)
            self.events.append((now, name, self.peak // 2**20))
        self.sample()

    def exit(self, name: str, items: int = 0) -> None:
        self.sample()
        with self.lock:
            if not any(n == name for n, _ in self.stack[1:]):
                return
            while True:  # phases left open inside it (an exception) close with it
                self._account(time.perf_counter())
                top, _ = self.stack.pop()
                if top == name:
                    break
            self._stat(name)["items"] += items
            self.stack[-1] = (self.stack[-1][0], time.perf_counter())

    def sample(self) -> None:
        rss = _rss_now()
        with self.lock:
            stat = self._stat(self.stack[-1][0])
            stat["peak_rss_bytes"] = max(stat["peak_rss_bytes"], rss)
            self.peak = max(self.peak, rss)

    def finish(self) -> None:
        with self.lock:
            self._account(time.perf_counter())


def _timed(phases: Phases, name_of: Any, items_of: Any = None) -> Any:
    def wrap(func: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = name_of(*args, **kwargs)
            phases.enter(name)
            result = None
            try:
                result = func(*args, **kwargs)
                return result
            finally:
                items = 0
                if items_of is not None and result is not None:
                    try:
                        items = int(items_of(result))
                    except Exception:
                        items = 0
                phases.exit(name, items)

        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        return wrapper

    return wrap


def _ref(args: tuple) -> Any:
    """The first component reference (``Ref``) among a call's arguments."""
    return next(a for a in args if hasattr(a, "options") and hasattr(a, "key"))


def _where(args: tuple) -> tuple:
    """The split ``where`` among a call's arguments: (split, ...) after a ``Ref``, or the
    tuple (kind, ref, split, ...)."""
    for a in args:
        if isinstance(a, tuple) and len(a) >= 3 and hasattr(a[1], "key"):
            return a
    ref = _ref(args)
    return next(a for a in args[args.index(ref) + 1 :] if isinstance(a, tuple))


def instrument(phases: Phases) -> Any:
    """Wrap the engine's phase methods in this process only; returns the progress sink."""
    import oebench.execute.cell as cell
    import oebench.execute.checkpoints as checkpoints
    import oebench.execute.detect as detect
    import oebench.execute.sources as sources
    import oebench.record.recorder as recorder
    from oebench.core.progress import Progress

    S, D = sources.Sources, detect.DetectorRun
    # names from the arguments by kind, not position (the engine's signatures may change)
    S.files = _timed(phases, lambda *a, **k: f"data files: {_ref(a).key}")(S.files)
    S._loaded = _timed(phases, lambda *a, **k: f"load: {_ref(a).key} {_where(a)[0]}", len)(
        S._loaded
    )
    cell.CellWork._outputs = _timed(
        phases,
        lambda *a, **k: f"forward: {_where(a)[1].key} {_where(a)[2]}",
        lambda out: len(out.logits),
    )(cell.CellWork._outputs)
    D._fit = _timed(phases, lambda *a, **k: f"fit: {_ref(a).key}")(D._fit)
    D._computed = _timed(phases, lambda *a, **k: f"score: {_where(a)[1].key}", len)(D._computed)
    D._evaluate = _timed(phases, lambda *a, **k: "metrics")(D._evaluate)
    recorder.Recorder.record = _timed(phases, lambda *a, **k: "store")(recorder.Recorder.record)
    checkpoints.CheckpointCache.save = _timed(phases, lambda *a, **k: "checkpoint save")(
        checkpoints.CheckpointCache.save
    )

    class Recorded(Progress):
        """Training bars: one phase from the bar's start to its last step, with step times;
        detector bars: one phase per detector (its fit, scores and metrics nested in it)."""

        def __init__(self) -> None:
            self.steps: dict[str, list[float]] = {}
            self.logs: list[str] = []

        def start(self, description: str, total: int) -> Any:
            if description.startswith("train "):
                name = "train: " + _training_of(description)
                times = self.steps.setdefault(name, [time.perf_counter()])
                phases.enter(name)
                done = [0]

                def step(advance: int = 1, status: str = "") -> None:
                    if advance:
                        times.append(time.perf_counter())
                        done[0] += advance
                        if done[0] >= total:
                            phases.exit(name, done[0])

                return step
            if description.startswith("detectors"):
                current: list[str] = []

                def detector(advance: int = 1, status: str = "") -> None:
                    if not advance and status:
                        current.append(f"detector: {status}")
                        phases.enter(current[-1])
                    elif advance and current:
                        phases.exit(current.pop())

                return detector
            return super().start(description, total)

        def log(self, message: str) -> None:
            self.logs.append(message)
            print(message, file=sys.stderr)

    return Recorded()


def _training_of(description: str) -> str:
    """The training a bar trains: ``train oe · seed 0 · ...`` or ``train ... [oe, seed 0]``."""
    if "[" in description:
        return description.split("[", 1)[1].split(",")[0].strip()
    return description.split()[1]


def patch_md5() -> None:
    """torchvision's MD5 checks: computed as torchvision does, then the file is accepted."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places
    import torchvision.datasets.svhn as svhn
    from torchvision.datasets.utils import calculate_md5

    def check(path: Any, md5: Any = None) -> bool:
        if not os.path.isfile(path):
            return False
        if md5 is not None:
            calculate_md5(path)
        return True

    for module in (cifar, svhn, places):
        module.check_integrity = check


def child(args: argparse.Namespace) -> None:
    """One benchmark, in this process: the run, then its phases as JSON on ``--out`` (also
    written every 10 s while it runs, marked ``partial``, for a run cut short)."""
    phases = Phases()
    stop = threading.Event()
    start = time.perf_counter()
    overrides = json.loads(args.overrides)
    progress: Any = None

    def snapshot(**more: Any) -> None:
        with phases.lock:
            stats = json.loads(json.dumps(phases.stats))
            events = list(phases.events)
        steps = dict(progress.steps) if progress is not None else {}
        out = {
            "benchmark": args.child,
            "overrides": overrides,
            "wall_seconds": round(time.perf_counter() - start, 2),
            "peak_rss_bytes": max(
                phases.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            ),
            "phases": stats,
            "train_steps": {
                k: [round(b - a, 4) for a, b in zip(v, v[1:], strict=False)]
                for k, v in steps.items()
            },  # fmt: skip
            "events": events,
            "partial": True,
        } | more
        tmp = Path(f"{args.out}.tmp")
        tmp.write_text(json.dumps(out, indent=1, default=float))
        tmp.replace(args.out)

    def sampler() -> None:
        last = time.perf_counter()
        while not stop.wait(0.05):
            phases.sample()
            if time.perf_counter() - last > 10:
                snapshot()
                last = time.perf_counter()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    import oebench

    patch_md5()
    progress = instrument(phases)
    df = oebench.run(args.child, device="cpu", progress=progress, overrides=overrides)
    phases.finish()
    stop.set()
    thread.join()
    mean = df[(df["ood_dataset"] == "mean") & (df["detector"] == "msp")]
    snapshot(
        partial=False,
        rows=len(df),
        failures=list(df.attrs.get("failures", [])),
        msp_mean=mean[["training", "auroc", "fpr95"]].to_dict("records"),
    )


def probe(args: argparse.Namespace) -> None:
    """``--probe-training BENCH``: the benchmark's OE training at full data size without its
    baseline cell first (which a full run reaches only after ~100k images of forward passes):
    the ID training split and the outliers loaded as the engine loads them, then
    ``--probe-steps`` OE steps of the real training loop; phases, steps and peak RSS as JSON."""
    import torch

    from oebench.bench.overrides import Overrides, overridden
    from oebench.bench.parse import load_benchmark
    from oebench.execute.sources import Sources
    from oebench.execute.training import train
    from oebench.registry.lookup import create_model, create_objective

    phases, stop = Phases(), threading.Event()
    threading.Thread(target=lambda: [phases.sample() for _ in iter(lambda: stop.wait(0.05),
                     True)], daemon=True).start()  # fmt: skip
    patch_md5()
    bench = load_benchmark(args.probe_training)
    oe = next(t for t in bench.trainings if t.outliers is not None)
    steps = args.probe_steps
    bench = overridden(bench, Overrides(settings=((f"trainings.{oe.name}.epochs", 1),
                       ("training.max_train", steps * oe.params["batch_size"]))))  # fmt: skip
    oe, id_ref, model_ref = bench.training(oe.name), bench.id_datasets[0], bench.models[0]
    sources = Sources(bench)
    for kind, ref in sources.all():
        if ref is id_ref or ref is oe.outliers:
            phases.enter(f"data files: {ref.key}")
            sources.files(kind, ref)
            phases.exit(f"data files: {ref.key}")
    source = sources.source("dataset", id_ref)
    shape = tuple(source.shape)
    phases.enter(f"load: {id_ref.key} train")
    train_set = sources.load("dataset", id_ref, "train", None, 0)
    phases.exit(f"load: {id_ref.key} train", len(train_set))
    phases.enter(f"load: {oe.outliers.key} train")
    outliers = sources.load("outlier source", oe.outliers, "train", shape, 0)
    phases.exit(f"load: {oe.outliers.key} train", len(outliers))
    model = create_model(model_ref.name, source.num_classes, shape, **model_ref.kwargs)
    objective = create_objective(oe.objective.name, **oe.objective.kwargs)
    times = [time.perf_counter()]
    phases.enter(f"train: {oe.name}")
    torch.set_num_threads(oe.params.get("threads") or torch.get_num_threads())
    train(model, train_set, objective, oe.params, 0, shape, torch.device("cpu"), outliers,
          on_step=lambda step, total: times.append(time.perf_counter()))  # fmt: skip
    phases.exit(f"train: {oe.name}", steps)
    phases.finish()
    stop.set()
    out = {
        "benchmark": args.probe_training, "probe": "training", "partial": False,
        "overrides": {f"trainings.{oe.name}.epochs": 1, "training.max_train": steps *
                      oe.params["batch_size"]},
        "wall_seconds": round(time.perf_counter() - phases.t0, 2),
        "peak_rss_bytes": max(phases.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                              * 1024),
        "phases": phases.stats, "events": phases.events,
        "train_steps": {f"train: {oe.name}": [round(b - a, 4) for a, b in
                                              zip(times, times[1:], strict=False)]},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))


# -- the driver -----------------------------------------------------------------------------------
def recipe_steps(bench: str) -> dict[str, int]:
    """The full recipe's training steps per training, from the shipped file at real size."""
    from oebench.bench.parse import load_benchmark

    b = load_benchmark(bench)
    n = (SIZES["svhn_train"] + SIZES["svhn_extra"]) if "svhn" in bench else SIZES["cifar_train"]
    return {t.name: t.params["epochs"] * -(-n // t.params["batch_size"]) for t in b.trainings}


def overrides_for(
    bench: str, scale: float, max_train: int, extra: dict[str, Any], small: bool = False
) -> dict:
    """One epoch per training, ``max_train`` ID images, the synthetic sets' ``n`` times
    ``scale``; ``small``: WRN depth 10, width 1 (the suite's quick check, not the paper's)."""
    from oebench.bench.parse import load_benchmark

    b = load_benchmark(bench)
    found: dict[str, Any] = {f"trainings.{t.name}.epochs": 1 for t in b.trainings}
    found["training.max_train"] = max_train
    for ref in b.models if small else []:
        found |= {f"models.{ref.key}.depth": 10, f"models.{ref.key}.widen_factor": 1}
    if scale < 1:
        for ref in b.ood_datasets:
            if "n" in ref.kwargs and ref.name in ("gaussian", "rademacher", "blobs"):
                found[f"ood_datasets.{ref.key}.n"] = _n(ref.kwargs["n"], scale)
    return found | extra


#: the test sets' real sizes as the files use them (OOD sets at their ``n`` where given)
FULL_SETS = {
    "cifar10": 10_000, "cifar100": 10_000, "svhn": 26_032, "gaussian": 10_000,
    "rademacher": 10_000, "blobs": 10_000, "textures-dtd": 5_640, "places365": 10_000,
    "lsun": 10_000, "icons50": 49 * 200, "chars74k": 7_705 + 4_798,
}  # fmt: skip


def summarise(bench: str, result: dict[str, Any]) -> dict[str, Any]:
    """Steady seconds per step (the median after the first) x the recipe's steps, plus the
    evaluation: measured seconds per image of the forward passes x every test image of every
    cell (so that a run cut short projects too), plus the rest as measured."""
    import statistics

    from oebench.bench.parse import load_benchmark

    steps = recipe_steps(bench)
    per_step = {}
    for name, times in result.get("train_steps", {}).items():
        training = name.split(": ", 1)[1]
        steady = times[1:] or times
        per_step[training] = statistics.median(steady) if steady else 0.0
    phases = result.get("phases", {})
    forward = [v for k, v in phases.items() if k.startswith("forward: ") and v["items"]]
    per_image = sum(v["seconds"] for v in forward) / max(1, sum(v["items"] for v in forward))
    b = load_benchmark(bench)
    images = len(b.trainings) * sum(FULL_SETS[r.key] for r in b.id_datasets + b.ood_datasets)
    timed = ("train: ", "forward: ")
    rest = sum(v["seconds"] for k, v in phases.items() if not k.startswith(timed))
    projected_train = {t: per_step.get(t, 0.0) * n for t, n in steps.items()}
    total = sum(projected_train.values()) + per_image * images + rest
    return {
        "seconds_per_step": per_step,
        "recipe_steps": steps,
        "projected_train_seconds": projected_train,
        "forward_seconds_per_image": round(per_image, 5),
        "test_images_all_cells": images,
        "projected_forward_seconds": round(per_image * images, 1),
        "measured_other_seconds": round(rest, 1),
        "projected_total_hours": round(total / 3600, 2),
        "complete": not result.get("partial", True),
    }


def table(bench: str, result: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [f"== {bench}: {result['wall_seconds']:.1f} s, peak RSS "
             f"{result['peak_rss_bytes'] / 2**30:.2f} GiB", f"{'phase':44} {'s':>9} {'calls':>6} "
             f"{'items':>8} {'us/item':>9} {'peak GiB':>9}"]  # fmt: skip
    for name, v in sorted(result["phases"].items(), key=lambda kv: -kv[1]["seconds"]):
        rate = f"{1e6 * v['seconds'] / v['items']:9.0f}" if v["items"] else " " * 9
        lines.append(f"{name[:44]:44} {v['seconds']:9.2f} {v['calls']:6d} {v['items']:8d} {rate} "
                     f"{v['peak_rss_bytes'] / 2**30:9.2f}")  # fmt: skip
    for t, s in summary["seconds_per_step"].items():
        lines.append(f"train {t}: {s:.2f} s/step x {summary['recipe_steps'][t]} recipe steps = "
                     f"{summary['projected_train_seconds'][t] / 3600:.1f} h")  # fmt: skip
    lines.append(f"forward passes: {1e3 * summary['forward_seconds_per_image']:.1f} ms/image x "
                 f"{summary['test_images_all_cells']} test images of all cells = "
                 f"{summary['projected_forward_seconds'] / 3600:.2f} h")  # fmt: skip
    lines.append(f"projected full recipe on this machine: {summary['projected_total_hours']} h")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of every dataset's size")
    p.add_argument("--data-root", type=Path, help="where the synthetic data goes (kept)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    p.add_argument("--max-train", type=int, help="ID training images (default 1280 x scale)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a further override for every benchmark")  # fmt: skip
    p.add_argument("--small-models", action="store_true",
                   help="WRN depth 10, width 1 instead of the files' (a quick check of the "
                   "harness, not the paper's network)")  # fmt: skip
    p.add_argument("--time-limit", type=float, help="seconds per benchmark, then stop it")
    p.add_argument("--keep-data", action="store_true", help="keep a --data-root made here")
    p.add_argument("--output", type=Path, help="the JSON file (default: results/rehearsal-...)")
    p.add_argument(
        "--probe-training",
        metavar="BENCH",
        help="only the OE training at full data size (see probe()); with --out",
    )
    p.add_argument("--probe-steps", type=int, default=3)
    p.add_argument("--summarise", type=Path, metavar="JSON", help="redo a report's projections")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--overrides", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.probe_training:
        probe(args)
        return 0
    if args.summarise:  # the projections and tables again, from a written report
        report = json.loads(args.summarise.read_text())
        for bench, result in report["benchmarks"].items():
            if "phases" in result:
                result["projection"] = summarise(bench, result)
                print(table(bench, result, result["projection"]))
        args.summarise.write_text(json.dumps(report, indent=1, default=float) + "\n")
        return 0
    from oebench.bench.overrides import parse_settings

    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    unknown = [b for b in benches if b not in NEEDS]
    if unknown or not 0 < args.scale <= 1:
        p.error(f"--benchmarks: one of {', '.join(NEEDS)}; --scale in (0, 1]")
    made = args.data_root is None
    root = args.data_root or Path(tempfile.mkdtemp(prefix="oebench-rehearsal-data-"))
    names = sorted({n for b in benches for n in NEEDS[b]})
    start = time.perf_counter()
    written = ensure_data(root, args.scale, names)
    generate_seconds = time.perf_counter() - start
    max_train = args.max_train or _n(1280, args.scale)
    extra = dict(parse_settings(args.extra))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_before": os.getloadavg()},
        "date": datetime.date.today().isoformat(), "scale": args.scale, "data_root": str(root),
        "data_generation_seconds": written, "data_generation_total": round(generate_seconds, 1),
        "benchmarks": {},
    }  # fmt: skip
    name = f"rehearsal-cpu{os.cpu_count()}-{report['date']}"
    name += "" if args.scale == 1 else f"-scale{args.scale:g}"
    output = args.output or HERE / "results" / f"{name}.json"
    for bench in benches:
        overrides = overrides_for(bench, args.scale, max_train, extra, args.small_models)
        with tempfile.TemporaryDirectory(prefix="oebench-rehearsal-run-") as tmp:
            env = os.environ | {"OEBENCH_DATA_ROOT": str(root), "OEBENCH_CACHE_DIR": f"{tmp}/cache",
                                "OEBENCH_STORE": f"{tmp}/store.sqlite"}  # fmt: skip
            env.pop("OEBENCH_DOWNLOAD", None)
            out = Path(tmp) / "phases.json"
            sets = " ".join(f"--set {k}={json.dumps(v)}" for k, v in overrides.items())
            print(f"running {bench} (as `oebench run {bench} {sets}`)", file=sys.stderr)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", bench,
                   "--overrides", json.dumps(overrides), "--out", str(out)]  # fmt: skip
            proc = subprocess.Popen(cmd, env=env)
            try:
                code = proc.wait(timeout=args.time_limit)
            except subprocess.TimeoutExpired:  # cut short: its last snapshot is kept
                proc.terminate()
                code = proc.wait()
                print(f"{bench}: stopped after --time-limit {args.time_limit} s", file=sys.stderr)
            result = json.loads(out.read_text()) if out.is_file() else {}
        command = f"oebench run {bench} {sets}"
        if code != 0 and not result:
            print(f"{bench} failed (exit {code})", file=sys.stderr)
            report["benchmarks"][bench] = {"failed": code, "command": command}
        else:
            summary = summarise(bench, result)
            report["benchmarks"][bench] = result | {"exit": code, "projection": summary,
                                                    "command": command}  # fmt: skip
            print(table(bench, result, summary), flush=True)
        report["machine"]["load_after"] = os.getloadavg()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(f"wrote {output}", file=sys.stderr)
    if made and not args.keep_data:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if any(v.get("exit", v.get("failed")) for v in report["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
