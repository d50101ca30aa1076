"""ODIN's CPU chunking and the import cost of the modules the speed work touched."""

import subprocess
import sys

import numpy as np
import torch

import oebench
from oebench.contracts.model import Classifier


def _model():
    torch.manual_seed(0)
    net = oebench.create_model("small-cnn", 10, (1, 28, 28))
    return Classifier(net, (0.5,), (0.5,)).eval()


def test_odin_chunks_cpu_batches_without_changing_scores(monkeypatch):
    model = _model()
    images = torch.rand(70, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    whole = oebench.create_detector("odin").score_inputs(model, iter([images]))
    det = oebench.create_detector("odin")
    seen = []
    score_batch = det._score_batch
    monkeypatch.setattr(det, "CPU_CHUNK", 16)
    monkeypatch.setattr(det, "_score_batch", lambda m, x: seen.append(len(x)) or score_batch(m, x))
    chunked = det.score_inputs(model, iter([images[:50], images[50:]]))
    assert seen == [16, 16, 16, 2, 16, 4]
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=0)
    # ODIN really perturbs: its scores differ from the same model's MSP at T = 1000
    logits = model(images).detach().double().numpy() / 1000
    plain = oebench.create_detector("msp").score(oebench.Outputs(logits, None, None))
    assert not np.allclose(np.argsort(whole), np.argsort(plain))


def test_metrics_and_image_plugins_import_nothing_heavy():
    code = (
        "import sys\nimport oebench.metrics, oebench_plugins.images\n"
        "heavy = {'numpy', 'torch', 'torchvision', 'pandas', 'sklearn', 'scipy', 'matplotlib',"
        " 'skimage', 'PIL', 'mlxtend'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
