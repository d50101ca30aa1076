"""``benchmarks/perf/gpu_rehearsal.py --device cpu --tiny``: every section measures (numbers,
no errors) and lands in the one JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

SECTIONS = ("host_time", "variants", "concurrent", "utilisation", "scoring", "projection")


def test_tiny_rehearsal_on_the_cpu_fills_every_section(tmp_path):
    script = REPO / "benchmarks" / "perf" / "gpu_rehearsal.py"
    args = [sys.executable, str(script), "--device", "cpu", "--tiny", "--out", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-rehearsal-cpu-tiny.json").read_text())
    for name in SECTIONS:
        assert "error" not in results[name], (name, results[name])
    assert results["host_time"]["real_loop_step_ms"] > 0
    assert set(results["host_time"]["ms"]) >= {"augment", "forward", "backward", "optimizer"}
    assert results["variants"]["fp32_eager_sgd_foreach_ms"] > 0
    assert results["variants"]["reduce_overhead"].startswith("skipped")  # CUDA graphs: CUDA only
    assert results["concurrent"]["n2"]["images_per_s_total"] > 0
    assert results["scoring"]["fp32"]["images_per_s"] > 0
    assert results["utilisation"]["gflop_per_step"] > 0
    assert results["projection"]["ten_seeds_h_concurrent"] > 0
