"""The example plugin's own tests, written with oebench's plugin kit (oebench.testing)."""

import numpy as np
import oebench_example_detector as plugin
import pytest

from oebench.api import Outputs, create_detector, list_detectors
from oebench.testing import check_detector


@pytest.fixture(autouse=True)
def _registered(oebench_plugin):
    """The plugin is registered for each test and unregistered after it."""
    oebench_plugin(plugin, name="example-detector-under-test")


def test_detector_keeps_the_contract():
    check_detector("logit-margin")


def test_scores_are_minus_the_top_two_gap():
    logits = np.array([[3.0, 1.0, 0.0], [2.0, 2.0, -1.0], [0.0, 5.0, 4.5]])
    scores = create_detector("logit-margin").score(Outputs(logits))
    assert scores.tolist() == [-2.0, 0.0, -0.5]  # a tie is the most uncertain: 0


def test_registered_only_inside_the_test():
    assert list_detectors("logit-margin") == ["logit-margin"]
