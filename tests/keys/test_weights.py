"""Notes on weights (oebench.keys.weights): a digest believed only while the checkpoint file it
was read from is unchanged; the key of a note on seeded initial weights."""

import json
import subprocess
import sys

import pytest

from oebench.execute.checkpoints import CheckpointCache
from oebench.keys.weights import NOTE_FORMAT, WeightNotes, init_note_key, torch_version

KEY = "a1b2c3"


@pytest.fixture
def cache(tmp_path):
    return CheckpointCache(tmp_path)


@pytest.fixture
def notes(cache):
    cache.root.mkdir(parents=True)
    cache.path(KEY).write_bytes(b"the checkpoint's bytes")  # only its sha256 is read
    return WeightNotes(cache)


def test_a_trained_note_round_trips_while_its_checkpoint_file_is_the_same(notes, cache):
    assert notes.trained(KEY) is None  # nothing noted yet
    notes.note_trained(KEY, "d1g35t", 2)
    assert notes.trained(KEY) == ("d1g35t", 2.0)
    saved = json.loads((notes.root / f"{KEY}.json").read_text())
    assert saved["format"] == NOTE_FORMAT and saved["digest"] == "d1g35t"
    assert WeightNotes(cache).trained(KEY) == ("d1g35t", 2.0)  # the next run reads it too


def test_a_note_whose_checkpoint_changed_is_not_believed(notes, cache):
    notes.note_trained(KEY, "d1g35t", 2.0)
    original = cache.path(KEY).read_bytes()
    cache.path(KEY).write_bytes(b"other weights, same key")
    assert notes.trained(KEY) is None
    cache.path(KEY).unlink()
    assert notes.trained(KEY) is None
    cache.path(KEY).write_bytes(original)  # the very file it was read from: believed again
    assert notes.trained(KEY) == ("d1g35t", 2.0)


def test_without_a_checkpoint_file_nothing_is_noted(notes, cache):
    notes.note_trained("no-such-checkpoint", "d", 1.0)
    assert not (notes.root / "no-such-checkpoint.json").exists()
    assert notes.trained("no-such-checkpoint") is None


def test_init_notes_round_trip_by_their_key(notes):
    assert notes.init_digest("k") is None
    notes.note_init("k", "1n1t")
    assert notes.init_digest("k") == "1n1t"
    assert notes.init_digest("other") is None
    assert (notes.root / "init-k.json").is_file()


@pytest.mark.parametrize(
    "text",
    ["{not json", "", "[1, 2]", json.dumps({"format": NOTE_FORMAT + 1, "digest": "d"})],
)
def test_a_damaged_or_foreign_note_is_ignored(notes, text):
    notes.note_init("k", "1n1t")
    notes.note_trained(KEY, "d1g35t", 2.0)
    (notes.root / "init-k.json").write_text(text)
    (notes.root / f"{KEY}.json").write_text(text)
    assert notes.init_digest("k") is None
    assert notes.trained(KEY) is None
    notes.note_init("k", "again")  # and written anew
    assert notes.init_digest("k") == "again"


def test_a_disabled_cache_neither_reads_nor_writes_notes(tmp_path):
    on = WeightNotes(CheckpointCache(tmp_path))
    on.note_init("k", "1n1t")
    off = WeightNotes(CheckpointCache(tmp_path, enabled=False))
    assert not off.enabled and off.init_digest("k") is None
    off.note_init("j", "x")
    assert not (off.root / "init-j.json").exists()


CONFIG = {
    "benchmark": "b",
    "seed": 0,
    "id_dataset": {"name": "mnist-5k", "options": {}},
    "model": {"name": "small-cnn", "options": {"width": 8}},
    "training": {"objective": {"name": "cross-entropy"}},
    "detectors": [{"name": "msp", "options": {}}],
    "names": {"model": "small-cnn"},
    "fingerprints": {
        "code": {"model:small-cnn": "m1", "detector:msp": "d1", "engine:training": "e1"},
        "data": {"dataset:mnist-5k": "f1"},
    },
}


def changed(path: str, value):
    """CONFIG with the entry at ``path`` (``fingerprints/code/model:small-cnn``) set."""
    config = json.loads(json.dumps(CONFIG))
    *parents, last = path.split("/")
    here = config
    for part in parents:
        here = here[part]
    here[last] = value
    return config


def test_the_init_note_key_is_stable():
    assert init_note_key(CONFIG) == init_note_key(json.loads(json.dumps(CONFIG)))


@pytest.mark.parametrize(
    "path, value",
    [
        ("seed", 1),
        ("id_dataset", {"name": "fashion-mnist", "options": {}}),
        ("model", {"name": "small-cnn", "options": {"width": 16}}),
        ("model_files", {"path": "abc"}),
        ("fingerprints/code/model:small-cnn", "m2"),
        ("fingerprints/code/engine:training", "e2"),
        ("fingerprints/data/dataset:mnist-5k", "f2"),
    ],
)
def test_what_makes_the_initial_weights_changes_the_init_note_key(path, value):
    assert init_note_key(changed(path, value)) != init_note_key(CONFIG)


@pytest.mark.parametrize(
    "path, value",
    [
        ("fingerprints/code/detector:msp", "d2"),  # a detector never changes the weights
        ("training", {"objective": {"name": "oe"}}),  # the initial weights come first
        ("detectors", []),
        ("names", {"model": "renamed"}),
        ("benchmark", "another"),
    ],
)
def test_what_cannot_change_the_initial_weights_keeps_the_init_note_key(path, value):
    assert init_note_key(changed(path, value)) == init_note_key(CONFIG)


def test_torch_version_is_read_without_importing_torch():
    code = (
        "import sys\nfrom oebench.keys.weights import torch_version\n"
        "print(torch_version(), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    import torch

    assert out.stdout.split() == [str(torch.__version__), "False"], out.stderr
    assert torch_version() == str(torch.__version__)
