"""The numerics of a training (oebench.execute.training.training_numerics): ``numerics =
"portable"`` gives the same weights whatever CPU kernels the parent environment asks for,
and is refused in a process that imported torch unpinned; ``deterministic = true`` turns on
the deterministic flags during the training only. Both settings are keyed only where set."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import TINY

import oebench.execute.training
from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.core.platforms import PORTABLE_ENV, portable_active, prepare_process
from oebench.core.progress import Progress
from oebench.errors import UserError
from oebench.execute.cell_models import TrainedModels
from oebench.execute.context import Context
from oebench.execute.runner import Runner
from oebench.execute.sources import Sources

#: trains the tiny benchmark's small CNN for 16 steps in a fresh process and prints the
#: capability ATen used and the sha256 of the weights; argv[1]: the training's numerics
TRAIN = """
import hashlib, sys
from oebench.core.platforms import prepare_process
params = {"numerics": sys.argv[1]}
prepare_process([("t", params)])  # before torch, as `oebench run` does
import torch
from oebench.contracts.model import Classifier
from oebench.execute.training import train, training_numerics
from oebench.registry.lookup import create_dataset, create_model, create_objective
torch.set_num_threads(1)
source = create_dataset("mnist-5k")
data, shape = source.load("train"), tuple(source.shape)
torch.manual_seed(0)
model = Classifier(create_model("small-cnn", 10, shape, width=8), source.mean, source.std)
params |= dict(epochs=2, batch_size=64, outlier_batch_size=64, lr=0.1, momentum=0.9,
               nesterov=True, weight_decay=5e-4, max_train=512, threads=1)
cpu = torch.device("cpu")
with training_numerics(params, cpu) as platform:
    train(model, data, create_objective("cross-entropy"), params, 0, shape, cpu)
h = hashlib.sha256()
for name, value in sorted(model.state_dict().items()):
    h.update(name.encode() + value.contiguous().numpy().tobytes())
print(platform["cpu_capability"], platform["numerics"], h.hexdigest())
"""


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def _trained(numerics: str, **env: str) -> tuple[str, str, str]:
    """(capability, numerics, weights sha256) of TRAIN in a process started with ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, numerics],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    capability, mode, digest = done.stdout.split()
    return capability, mode, digest


@pytest.mark.skipif(not _has_avx2(), reason="needs a CPU with AVX2")
def test_portable_weights_are_the_same_whatever_the_parent_environment_asks_for():
    # unpinned, the kernels ATen picks decide the last bits: the pins have something to do
    avx2 = _trained("native", ATEN_CPU_CAPABILITY="avx2")
    default = _trained("native", ATEN_CPU_CAPABILITY="default")
    assert (avx2[0], default[0]) == ("AVX2", "DEFAULT")
    assert avx2[2] != default[2]
    # pinned, the parent's capability and ISA limits are overridden: the same weights
    one = _trained("portable", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    two = _trained("portable", ATEN_CPU_CAPABILITY="default", MKL_CBWR="AUTO")
    assert one == two
    assert one[:2] == ("DEFAULT", "portable")


@pytest.fixture
def unpinned():
    """This (test) process: torch imported without the pins."""
    import torch  # noqa: F401

    if portable_active():
        pytest.skip("this process runs with the portable pins already")


def test_portable_is_refused_in_one_line_where_torch_was_imported_unpinned(unpinned):
    with pytest.raises(UserError) as caught:
        prepare_process([("oe", {"numerics": "portable"})])
    message = str(caught.value)
    assert "\n" not in message and "training 'oe'" in message
    assert "ATEN_CPU_CAPABILITY=default" in message and "before importing torch" in message
    # and by the training itself, where a worker imported torch before the run said so
    numerics = oebench.execute.training.training_numerics(
        {"numerics": "portable"}, _cpu(), "training 'baseline'"
    )
    with pytest.raises(UserError, match="training 'baseline' sets numerics"), numerics:
        pass  # pragma: no cover


def _cpu():
    import torch

    return torch.device("cpu")


def _with(text: str) -> str:
    """TINY's text with ``text`` added to its [training] section."""
    return TINY.read_text().replace("[training]\n", f"[training]\n{text}\n", 1)


def test_the_settings_are_keyed_only_where_set_and_checked():
    plain = load_benchmark(str(TINY))
    for t in plain.trainings:  # unset: not in the params, so no existing key changes
        assert "numerics" not in t.params and "deterministic" not in t.params
    keys = {cell.key for cell in Runner(plain, device="cpu").cells()}
    for setting in ('numerics = "portable"', "deterministic = true"):
        bench = parse_benchmark(_with(setting), str(TINY))
        other = {cell.key for cell in Runner(bench, device="cpu").cells()}
        assert not other & keys, setting  # another setting: other cells, other checkpoints
    with pytest.raises(UserError, match="numerics"):
        parse_benchmark(_with('numerics = "fast"'), str(TINY))


def test_deterministic_flags_are_on_during_the_training_and_restored_after(monkeypatch):
    import torch

    cudnn = torch.backends.cudnn
    bench = parse_benchmark(_with("deterministic = true"), str(TINY))
    bench = replace(bench, trainings=bench.trainings[:1])  # the baseline
    seen: list[tuple] = []
    real = oebench.execute.training.train

    def watched(model, train_set, objective, params, *args, **kwargs):
        class Watched:  # the objective of each step: notes the flags as the step sees them
            uses_outliers = objective.uses_outliers

            def __call__(self, *inputs):
                flags = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic)
                seen.append((*flags, cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
                return objective(*inputs)

        return real(model, train_set, Watched(), params, *args, **kwargs)

    monkeypatch.setattr(oebench.execute.training, "train", watched)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic)
    assert before == (False, False)
    cell = next(iter(Runner(bench, device="cpu").cells()))
    context = Context(bench, Sources(bench), Progress(), "cpu")
    models = TrainedModels(context, lambda c, name: c, use_cache=False)
    models.build(cell)
    assert seen and all(s == (True, True, False, ":4096:8") for s in seen)
    after = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark)
    assert after == (False, False, True)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    platform = models.training_platform(cell)
    assert platform["deterministic"] is True and platform["threads"] == 1


#: in a fresh process: prepare_process for argv[1]'s trainings, with PORTABLE_ENV set or not
REFUSE = """
import json, os, sys
from oebench.core.platforms import PORTABLE_ENV, prepare_process
from oebench.errors import UserError
if sys.argv[2] == "pinned":
    os.environ.update(PORTABLE_ENV)
try:
    prepare_process(json.loads(sys.argv[1]))
    print("ok")
except UserError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize(
    ("trainings", "env", "expected"),
    [
        # the pins hold for the whole process: one numerics per benchmark
        ([["baseline", {}], ["oe", {"numerics": "portable"}]], "plain", "set numerics once"),
        # a process whose environment pins the kernels gives native trainings no native ones
        ([["baseline", {}]], "pinned", "would not get native ones"),
        ([["baseline", {"numerics": "portable"}]], "pinned", "ok"),
        ([["baseline", {}]], "plain", "ok"),
    ],
)
def test_native_and_portable_trainings_never_share_a_process(trainings, env, expected):
    import json

    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    out = subprocess.run(
        [sys.executable, "-c", REFUSE, json.dumps(trainings), env],
        capture_output=True, text=True, env=clean, check=True,
    ).stdout.strip()  # fmt: skip
    assert expected in out and out.count("\n") == 0
    assert out.startswith("ok") == (expected == "ok")
