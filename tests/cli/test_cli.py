import pytest
from conftest import TINY, run_cli


def _one_line_error(result):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "list", "cache"):
        assert command in result.stdout


def test_unknown_benchmark_suggests_close_names():
    line = _one_line_error(run_cli("run", "quikstart"))
    assert "Unknown benchmark 'quikstart'" in line and "Did you mean: quickstart" in line


def test_missing_benchmark_file():
    assert "not found" in _one_line_error(run_cli("run", "nowhere/bench.toml"))


def test_unknown_detector_pattern():
    line = _one_line_error(run_cli("run", str(TINY), "--detectors", "enrgy"))
    assert "Unknown detector 'enrgy'" in line and "energy" in line


def test_unknown_command_suggests():
    result = run_cli("rnu")
    assert result.returncode == 2 and "Did you mean: run" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"faces",', '"facez",', "Unknown dataset 'facez'. Did you mean: faces?"),
        (
            'detectors = ["msp", "energy"]',
            'detectors = [{ name = "energy", temp = 5 }]',
            "Options it accepts: temperature",
        ),
        ('objective = "oe"', 'objective = "0e"', "Unknown objective '0e'"),
        ('from = "baseline"', 'from = "nothing"', "must be an earlier training"),
        ("epochs = 1", "epohcs = 1", "unknown key(s) epohcs"),
        ('name = "tiny"', 'name = "tiny', "invalid TOML"),
    ],
)
def test_bad_benchmark_files_fail_in_one_line_before_any_work(tmp_path, old, new, expected):
    text = TINY.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    assert expected in _one_line_error(run_cli("run", str(path)))


def test_bad_option_value_is_a_usage_error():
    result = run_cli("run", "--device", "tpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_cuda_without_gpu_is_a_user_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "no CUDA device" in _one_line_error(run_cli("run", str(TINY), "--device", "cuda"))


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom oebench.cli import cli, main\nfrom oebench.registry.plugins import "
        "get_plugin_manager\nget_plugin_manager().add_commands(cli)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cache_info_and_clear(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".oebench-cache").write_text("made by oebench")  # only a marked cache is cleared
    for sub, suffix in (("models", "pt"), ("outputs", "npz")):
        (cache / sub).mkdir(parents=True)
        (cache / sub / f"{'0' * 20}.{suffix}").write_bytes(b"0" * 2048)
    env = {"OEBENCH_CACHE_DIR": str(cache)}
    info = run_cli("cache", "info", env=env)
    assert "models: 1 files" in info.stdout and "outputs: 1 files" in info.stdout
    assert run_cli("cache", "clear", "--outputs-only", env=env).returncode == 0
    assert not (cache / "outputs").exists() and (cache / "models" / f"{'0' * 20}.pt").exists()
    assert run_cli("cache", "clear", env=env).returncode == 0
    assert not (cache / "models").exists()
