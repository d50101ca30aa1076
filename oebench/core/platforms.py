"""What decides the last bits of a cell's numbers besides its seed and settings: the platform
its weights were trained and its outputs computed on (torch and its kernel libraries, the
device, the CPU instruction set the kernels use, threads, the deterministic flags, the
numerics mode), a short signature of it for comparisons, and the pins of
``numerics = "portable"``.

Two runs on one platform give the same bytes; another CPU family or GPU model gives other
last bits (a training amplifies them: the quickstart's single-seed metrics move by points).
ATen, oneDNN and MKL each pick their kernels for the CPU once per process, from the
environment, so ``numerics = "portable"`` sets ``PORTABLE_ENV`` before torch is imported
(``pin_portable``) and a process that imported torch unpinned cannot train portably.
"""

from __future__ import annotations

import functools
import os
import platform as _platform
import re
import sys
from collections.abc import Iterable
from typing import Any

#: pins the CPU kernels to what every x86-64 CPU runs, whatever the CPU has or the user's
#: environment asks for: ATen's baseline (non-vectorised) kernels, oneDNN's SSE4.1 ones and
#: MKL's conditional numerical reproducibility (its code path for any Intel-compatible CPU)
PORTABLE_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "COMPATIBLE",
}
#: what cuBLAS needs for deterministic results; read when CUDA's first cuBLAS handle is made
CUBLAS_DETERMINISTIC = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
#: environment variables that choose CPU kernels: recorded with every platform when set
KERNEL_ENV = (
    *PORTABLE_ENV,
    "MKL_ENABLE_INSTRUCTIONS",
    "DNNL_MAX_CPU_ISA",
    *CUBLAS_DETERMINISTIC,
)
NUMERICS = ("native", "portable")


def portable_active() -> bool:
    """Whether this process's CPU kernels are pinned (``PORTABLE_ENV`` set, and ATen, when
    loaded, running its baseline kernels)."""
    if any(os.environ.get(k) != v for k, v in PORTABLE_ENV.items()):
        return False
    torch = sys.modules.get("torch")
    return torch is None or torch.backends.cpu.get_cpu_capability() == "DEFAULT"


def pin_portable() -> bool:
    """Set ``PORTABLE_ENV`` in this process if torch is not imported yet (overriding what the
    environment had); whether the kernels are pinned now."""
    if "torch" not in sys.modules:
        os.environ.update(PORTABLE_ENV)
    return portable_active()


def portable_problem(what: str) -> str | None:
    """Why ``what`` (``training 'oe'``) cannot run with ``numerics = "portable"`` in this
    process (None: it can)."""
    if portable_active():
        return None
    pins = " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
    capability = _cpu_capability() or "unknown"
    return (
        f'{what} sets numerics = "portable", but this process imported torch before its CPU '
        f"kernels could be pinned (they use {capability}): run it with `oebench run` or "
        f"`oebench.run` before importing torch, or start Python (and every worker) with {pins}"
    )


def _cpu_capability() -> str | None:
    torch = sys.modules.get("torch")
    return str(torch.backends.cpu.get_cpu_capability()) if torch is not None else None


@functools.cache
def cpu_model() -> tuple[str, str]:
    """(model name, vendor) of this machine's CPU, from /proc/cpuinfo where there is one."""
    name = vendor = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and not name:
                    name = value.strip()
                elif key in ("vendor_id", "CPU implementer") and not vendor:
                    vendor = value.strip()
                if name and vendor:
                    break
    except OSError:
        pass
    return name or _platform.processor() or _platform.machine(), vendor


@functools.cache
def library_versions() -> dict[str, str | None]:
    """The versions of MKL and oneDNN torch was built with (from ``torch.__config__``)."""
    import torch

    text = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", text)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", text)
    return {"mkl": mkl.group(1) if mkl else None, "onednn": dnn.group(1) if dnn else None}


def platform_info(device: Any, threads: int | None = None) -> dict[str, Any]:
    """What decides the last bits of what torch computes on ``device`` in this process now
    (torch must be imported); ``threads``: a training's ``threads`` setting, when it is one."""
    import torch

    on_gpu = getattr(device, "type", str(device)) == "cuda"
    name, vendor = cpu_model()
    info: dict[str, Any] = {
        "torch": str(torch.__version__),
        "device": "cuda" if on_gpu else "cpu",
        "device_name": torch.cuda.get_device_name(device) if on_gpu else name,
        "machine": _platform.machine(),
        "cpu": name,
        "cpu_vendor": vendor,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        **library_versions(),
        "cuda": torch.version.cuda if on_gpu else None,
        "cudnn": torch.backends.cudnn.version() if on_gpu else None,
        "torch_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "numerics": "portable" if portable_active() else "native",
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }
    if threads is not None:
        info["threads"] = threads
    return info


_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}


def signature(info: dict[str, Any] | None, training: bool = True) -> str | None:
    """A platform in one line, equal for platforms that give the same bits:
    ``cpu:AVX512 AMD torch 2.14.1``, ``portable:x86_64 torch 2.14.1``,
    ``cuda:NVIDIA H200 torch 2.14.1 cuda 13.0 cudnn 92400``; a training on more than one
    CPU thread adds `` N threads`` and one with deterministic algorithms `` deterministic``
    (with ``training`` only). None for no platform."""
    if not info:
        return None
    torch = f"torch {info.get('torch')}"
    if info.get("device") == "cuda":
        text = f"cuda:{info.get('device_name')} {torch} cuda {info.get('cuda')}"
        text += f" cudnn {info.get('cudnn')}"
    elif info.get("numerics") == "portable":
        text = f"portable:{info.get('machine')} {torch}"
    else:
        vendor = str(info.get("cpu_vendor") or info.get("machine") or "")
        text = f"cpu:{info.get('cpu_capability')} {_VENDORS.get(vendor, vendor)} {torch}"
    if training and info.get("deterministic"):
        text += " deterministic"
    if training and "threads" in info and int(info.get("torch_threads") or 1) > 1:
        text += f" {info['torch_threads']} threads"
    return " ".join(text.split())


def cell_platform(
    training: dict[str, Any] | None, scoring: dict[str, Any] | None
) -> dict[str, Any]:
    """A cell's platforms: where its weights were trained (None: untrained weights, or a
    checkpoint saved without one) and where its outputs were computed (None: all cached),
    and the signature that compares cells: the training's, and the scoring's when it differs."""
    train, score = signature(training), signature(scoring, training=False)
    if train is None or score is None:
        sig = train or score
    elif score == signature(training, training=False):
        sig = train
    else:
        sig = f"{train}; scored on {score}"
    return {"signature": sig, "training": training, "scoring": scoring}


def prepare_process(trainings: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Before any work of a run, for its (name, settings) ``trainings``: pin the CPU kernels
    when one sets ``numerics = "portable"`` (a ``UserError`` when torch was imported unpinned;
    the whole process then runs pinned: every training and forward pass of it), and set
    cuBLAS's deterministic workspace while CUDA has not started when one sets
    ``deterministic`` (unless the environment has one)."""
    from oebench.errors import UserError

    trainings = list(trainings)
    portable = [name for name, params in trainings if params.get("numerics") == "portable"]
    native = [name for name, params in trainings if params.get("numerics") != "portable"]
    if portable and native:  # the pins hold for the whole process: no native kernels in it
        raise UserError(
            f'training {portable[0]!r} sets numerics = "portable" but {native[0]!r} does not: '
            "the pins hold for the whole process, so set numerics once, in [training]"
        )
    if portable and not pin_portable():
        raise UserError(str(portable_problem(f"training {portable[0]!r}")))
    if native and portable_active():
        pins = " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        raise UserError(
            f"this process runs pinned CPU kernels ({pins}), so training {native[0]!r} "
            'would not get native ones: set numerics = "portable" in [training], or run it '
            "in a new process without those variables"
        )
    if any(params.get("deterministic") for _, params in trainings):
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            for k, v in CUBLAS_DETERMINISTIC.items():
                os.environ.setdefault(k, v)
