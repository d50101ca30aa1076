"""``oebench.testing.check_import_is_light``: a plugin module that imports a heavy library at
its top fails, naming the library and the line; one that imports it inside a function passes."""

from __future__ import annotations

import pytest

from oebench.testing import check_import_is_light


@pytest.fixture
def module(tmp_path, monkeypatch):
    """``module(name, source)`` writes a module that a fresh process can import."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


def test_a_top_level_torch_import_fails_naming_the_library_and_line(module, tmp_path):
    module("kit_probe_helper", "import numpy\nimport torch.nn\n")
    name = module("kit_probe_heavy", '"""A plugin."""\nimport os\n\nimport kit_probe_helper\n')
    with pytest.raises(AssertionError) as exc:
        check_import_is_light(name)
    message = str(exc.value)
    assert f"importing {name!r} imports torch (at {tmp_path / 'kit_probe_helper.py'}:2)" in message
    assert "inside the functions" in message


def test_a_lazy_import_passes_and_the_list_of_heavy_libraries_can_be_chosen(module):
    lazy = module("kit_probe_lazy", "import json\n\ndef f():\n    import torch\n    return torch\n")
    check_import_is_light(lazy)
    with pytest.raises(AssertionError, match=r"imports colorsys \(at .*kit_probe_rgb.py:1\)"):
        check_import_is_light(module("kit_probe_rgb", "import colorsys\n"), heavy=["colorsys"])


def test_a_module_that_cannot_be_imported_fails_with_its_error(module):
    broken = module("kit_probe_broken", "raise RuntimeError('no plugin here')\n")
    with pytest.raises(AssertionError, match="failed in a fresh process: RuntimeError: no plugin"):
        check_import_is_light(broken)
