"""What decides a cell's last bits (oebench.core.platforms): this process's platform, its
signature, a cell's training and scoring platforms, and the portable pins."""

from __future__ import annotations

import os
import subprocess
import sys

import oebench.core.platforms as platforms
from oebench.core.platforms import PORTABLE_ENV, cell_platform, platform_info, signature

CPU = {"torch": "2.14.1", "device": "cpu", "cpu_capability": "AVX2", "cpu_vendor": "GenuineIntel"}


def test_this_process_platform_names_what_picks_its_kernels():
    import torch

    info = platform_info(torch.device("cpu"), threads=1)
    assert info["torch"] == torch.__version__ and info["device"] == "cpu"
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch_threads"] == torch.get_num_threads() and info["threads"] == 1
    assert info["deterministic"] is torch.are_deterministic_algorithms_enabled()
    assert info["cuda"] is None and info["device_name"] == info["cpu"] != ""
    if torch.backends.mkldnn.is_available():
        assert info["onednn"] and info["onednn"][0].isdigit()
    assert signature(info).startswith(("cpu:", "portable:"))
    assert "threads" not in signature(info | {"torch_threads": 1})


def test_signatures_tell_apart_what_gives_other_bits():
    assert signature(CPU) == "cpu:AVX2 Intel torch 2.14.1"
    assert signature(CPU | {"cpu_vendor": "AuthenticAMD"}) == "cpu:AVX2 AMD torch 2.14.1"
    portable = CPU | {"numerics": "portable", "machine": "x86_64", "cpu_capability": "DEFAULT"}
    assert signature(portable) == "portable:x86_64 torch 2.14.1"
    gpu = {"torch": "2.14.1", "device": "cuda", "device_name": "NVIDIA H200", "cuda": "13.0"}
    assert (
        signature(gpu | {"cudnn": 92400}) == "cuda:NVIDIA H200 torch 2.14.1 cuda 13.0 cudnn 92400"
    )
    trained = CPU | {"threads": 0, "torch_threads": 16, "deterministic": True}
    assert signature(trained) == "cpu:AVX2 Intel torch 2.14.1 deterministic 16 threads"
    assert signature(trained, training=False) == signature(CPU)
    assert signature(None) is None


def test_a_cells_signature_is_its_trainings_and_the_scorings_where_another():
    assert cell_platform(CPU, CPU | {"torch_threads": 2})["signature"] == signature(CPU)
    assert cell_platform(CPU, None)["signature"] == signature(CPU)  # outputs all cached
    assert cell_platform(None, CPU)["signature"] == signature(CPU)  # untrained weights
    other = CPU | {"cpu_capability": "AVX512"}
    mixed = cell_platform(CPU, other)
    assert mixed["signature"] == f"{signature(CPU)}; scored on {signature(other)}"
    assert mixed["training"] == CPU and mixed["scoring"] == other
    assert cell_platform(None, None)["signature"] is None


def test_pins_are_set_only_before_torch_and_override_the_environment():
    code = (
        "import os, sys\n"
        "from oebench.core.platforms import pin_portable, portable_active\n"
        "assert 'torch' not in sys.modules and not portable_active()\n"
        "assert pin_portable()\n"
        "import torch\n"
        "print(torch.backends.cpu.get_cpu_capability(), os.environ['ONEDNN_MAX_CPU_ISA'])\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    env = clean | {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["DEFAULT", "SSE41"]


def test_pins_are_not_set_once_torch_is_imported(monkeypatch):
    import torch

    for k in PORTABLE_ENV:
        monkeypatch.delenv(k, raising=False)
    assert "torch" in sys.modules and torch.backends.cpu.get_cpu_capability()
    assert platforms.pin_portable() is False
    assert not any(k in os.environ for k in PORTABLE_ENV)
