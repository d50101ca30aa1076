"""The data a run reads (oebench.execute.sources): each source, file list and split made once,
fingerprints that see every input, and plugin failures that name their plugin."""

from __future__ import annotations

import pytest

import oebench
from oebench.bench.matrix import Ref
from oebench.bench.parse import parse_benchmark
from oebench.errors import PluginFailed, UserError
from oebench.execute.sources import Sources, plugin_call

PLUGIN = "toy-sources"
#: what the toy sources were asked to do, in order
CALLS: list[tuple] = []


def _toy_classes():
    import torch

    from oebench.contracts.data import ImageSource, TensorImages

    class Counted(ImageSource):
        """Two-class 1x4x4 images; ``path``: a file it reads; ``breaks``: where it fails."""

        shape = (1, 4, 4)
        num_classes = 2
        splits = ("train", "test")

        def __init__(self, path: str = "", breaks: str = "", level: float = 0.5):
            if breaks == "creation":
                raise RuntimeError("bad constructor")
            self.path, self.breaks, self.level = path, breaks, level
            CALLS.append(("create", level))

        def files(self):
            CALLS.append(("files", self.level))
            if self.breaks == "files":
                raise FileNotFoundError("lost.bin")
            return [self.path] if self.path else []

        def load(self, split, *, shape=None, seed=0):
            CALLS.append(("load", split, shape, seed))
            if self.breaks == "load":
                raise SystemExit(3)  # a plugin that exits must not end the run silently
            if self.breaks == "user":
                raise UserError("set `path` to your copy of the data")
            if self.breaks == "labels":
                return TensorImages(
                    torch.full((4, 1, 4, 4), self.level), torch.tensor([0, 1, 2, 0])
                )
            return TensorImages(torch.full((4, 1, 4, 4), self.level), torch.tensor([0, 1, 0, 1]))

    class Spaced(Counted):
        network_space = True

    return Counted, Spaced


class ToySources:
    @staticmethod
    @oebench.hookimpl
    def register_datasets(register):
        counted, spaced = _toy_classes()
        register("counted-set", counted, description="a toy ID set")
        register("spaced-set", spaced, description="a toy network-space OOD set")

    @staticmethod
    @oebench.hookimpl
    def register_outlier_sources(register):
        counted, _ = _toy_classes()
        register("counted-outliers", counted, description="toy outliers")


TOML = """
name = "sources"
id_datasets = ["counted-set"]
models = ["small-cnn"]
detectors = ["msp"]
ood_datasets = [{ name = "counted-set", level = 0.9, label = "bright" }, "spaced-set"]

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "counted-outliers", level = 0.1 }
from = "baseline"
"""


@pytest.fixture
def sources(oebench_plugin):
    oebench_plugin(ToySources(), PLUGIN)
    CALLS.clear()
    return Sources(parse_benchmark(TOML))


def test_a_source_is_made_once_per_configuration(sources):
    ref = Ref("counted-set")
    first = sources.source("dataset", ref)
    assert sources.source("dataset", ref) is first
    assert sources.source("dataset", Ref("counted-set", label="again")) is first  # label only
    other = sources.source("dataset", Ref("counted-set", (("level", 0.9),)))
    assert other is not first and other.level == 0.9
    outliers = sources.source("outlier source", Ref("counted-outliers"))
    assert outliers is not first  # another kind of component, another memo entry
    assert CALLS == [("create", 0.5), ("create", 0.9), ("create", 0.5)]


def test_every_source_of_the_benchmark_is_listed(sources):
    assert [(kind, ref.key) for kind, ref in sources.all()] == [
        ("dataset", "counted-set"),
        ("dataset", "bright"),
        ("dataset", "spaced-set"),
        ("outlier source", "counted-outliers"),
    ]


def test_files_are_resolved_once_and_named_with_their_content_digest(sources, tmp_path):
    data = tmp_path / "set.bin"
    data.write_bytes(b"one")
    ref = Ref("counted-set", (("path", str(data)),))
    (found,) = sources.files("dataset", ref)
    assert sources.files("dataset", ref) == [found]
    assert CALLS.count(("files", 0.5)) == 1
    assert found[0] == "set.bin"
    data.write_bytes(b"two, replaced")
    assert sources.files("dataset", ref) == [found]  # the run keeps what it read first
    assert Sources(sources.bench).files("dataset", ref)[0][1] != found[1]  # the next run sees it
    assert sources.files("dataset", Ref("counted-set")) == []


def test_a_split_is_loaded_once_per_split_shape_and_seed(sources):
    ref = Ref("counted-set")
    train = sources.load("dataset", ref, "train", None, 0)
    assert sources.load("dataset", ref, "train", None, 0) is train
    sources.load("dataset", ref, "train", None, 1)
    sources.load("dataset", ref, "test", None, 0)
    sources.load("dataset", ref, "test", (3, 4, 4), 0)
    loads = [c for c in CALLS if c[0] == "load"]
    assert loads == [
        ("load", "train", None, 0),
        ("load", "train", None, 1),
        ("load", "test", None, 0),
        ("load", "test", (3, 4, 4), 0),
    ]
    assert len(train) == 4


@pytest.mark.parametrize(
    "kind, name, breaks, call, message",
    [
        ("dataset", "counted-set", "creation", "source", "creation: RuntimeError: bad constructor"),
        ("dataset", "counted-set", "files", "files", "files: FileNotFoundError: lost.bin"),
        ("dataset", "counted-set", "load", "load", "split 'test': SystemExit: 3"),
        ("outlier source", "counted-outliers", "load", "load", "split 'test': SystemExit: 3"),
    ],
)
def test_a_plugin_that_raises_is_named(sources, kind, name, breaks, call, message):
    ref = Ref(name, (("breaks", breaks),), label="mine")
    calls = {
        "source": lambda: sources.source(kind, ref),
        "files": lambda: sources.files(kind, ref),
        "load": lambda: sources.load(kind, ref, "test", None, 0),
    }
    with pytest.raises(PluginFailed) as caught:
        calls[call]()
    assert str(caught.value).startswith(f"{kind} 'mine' (plugin '{PLUGIN}') failed in {message}")
    assert caught.value.__cause__ is not None  # the plugin's own exception is kept


def test_a_user_error_of_a_plugin_and_a_broken_contract_are_not_wrapped_alike(sources):
    with pytest.raises(UserError, match="^set `path` to your copy of the data$") as caught:
        sources.load("dataset", Ref("counted-set", (("breaks", "user"),)), "test", None, 0)
    assert not isinstance(caught.value, PluginFailed)
    # labels outside [0, num_classes): the contract check runs inside the plugin's call
    with pytest.raises(PluginFailed, match=r"split 'train'.*labels must lie in \[0, 2\)"):
        sources.load("dataset", Ref("counted-set", (("breaks", "labels"),)), "train", None, 0)


def test_plugin_call_passes_results_through_and_names_the_plugin_of_a_failure():
    from oebench.registry.lookup import get_component

    assert plugin_call("dataset", Ref("faces"), "creation", lambda: 42) == 42

    def boom():
        raise KeyError("x")

    plugin = get_component("dataset", "faces").plugin
    with pytest.raises(PluginFailed) as caught:
        plugin_call("dataset", Ref("faces", label="lfw"), "creation", boom)
    expected = f"dataset 'lfw' (plugin {plugin!r}) failed in creation: KeyError: 'x'"
    assert str(caught.value).startswith(expected)  # (with $OEBENCH_DEBUG, a traceback follows)


def test_a_fingerprint_sees_the_split_seed_shape_options_and_norm(sources):
    ref = Ref("counted-set")
    base = sources.fingerprint("dataset", ref, "train", None, 0)
    assert base == sources.fingerprint("dataset", ref, "train", None, 0)
    assert base == Sources(sources.bench).fingerprint("dataset", ref, "train", None, 0)
    others = [
        sources.fingerprint("dataset", ref, "test", None, 0),
        sources.fingerprint("dataset", ref, "train", None, 1),
        sources.fingerprint("dataset", ref, "train", (3, 4, 4), 0),
        sources.fingerprint("dataset", ref, "train", None, 0, norm=((0.5,), (0.5,))),
        sources.fingerprint("dataset", Ref("counted-set", (("level", 0.2),)), "train", None, 0),
        sources.fingerprint("outlier source", Ref("counted-outliers"), "train", None, 0),
    ]
    assert len({base, *others}) == 1 + len(others)
    # a label is not data: the same images, the same fingerprint
    assert sources.fingerprint("dataset", Ref("counted-set", label="x"), "train", None, 0) == base


def test_norm_is_the_id_normalisation_for_network_space_sets_only(sources):
    id_source = sources.source("dataset", Ref("counted-set"))
    assert sources.norm("dataset", Ref("counted-set"), id_source) is None
    assert sources.norm("dataset", Ref("spaced-set"), id_source) == ((0.5,), (0.5,))


def test_model_files_are_the_options_that_name_existing_files(sources, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    ref = Ref("checkpoint", (("arch", "small-cnn"), ("path", str(weights))))
    found = sources.model_files(ref)
    assert list(found) == ["path"] and len(found["path"]) == 64
    weights.write_bytes(b"other weights")
    assert sources.model_files(ref) == found  # memoised for the run
    assert Sources(sources.bench).model_files(ref)["path"] != found["path"]
    assert sources.model_files(Ref("small-cnn", (("width", 8),))) == {}
