"""The offline text data: Debian's fortunes, licence paragraphs, word salad; text-quickstart."""

from __future__ import annotations

from pathlib import Path

import pytest

from oebench.bench.parse import load_benchmark
from oebench.errors import DataNotFoundError
from oebench.execute.runner import Progress, Runner
from oebench.registry.lookup import create_dataset, create_outlier_source

FORTUNES = Path("/usr/share/games/fortunes")
needs_debian_text = pytest.mark.skipif(
    not all(
        p.is_file()
        for p in (FORTUNES / "computers", FORTUNES / "bofh-excuses", Path("/usr/share/dict/words"))
    ),
    reason="Debian packages fortunes, fortunes-bofh-excuses, wamerican not installed",
)


def _fortune_file(path: Path, entries: list[str]) -> None:
    path.write_text("\n%\n".join(entries) + "\n%\n")


def test_fortune_format_and_every_nth_entry_is_test(tmp_path):
    _fortune_file(tmp_path / "cats", [f"cat quote {i}\n\t\t-- Someone" for i in range(6)])
    _fortune_file(tmp_path / "cars", ["car one", "car two", "car three"])
    source = create_dataset("fortunes", categories=["cats", "cars"], root=str(tmp_path),
                            test_every=3)  # fmt: skip
    train, train_labels = source.texts("train")
    test, test_labels = source.texts("test")
    # entries 0, 1, 3, 4 of cats and 0, 1 of cars train; entries 2, 5 and 2 test
    assert test == ["cat quote 2\n\t\t-- Someone", "cat quote 5\n\t\t-- Someone", "car three"]
    assert test_labels == [0, 0, 1] and train_labels == [0, 0, 0, 0, 1, 1]
    assert train[-1] == "car two" and source.num_classes == 2
    with pytest.raises(DataNotFoundError, match="apt-get install fortunes"):
        create_dataset("fortunes", categories=["cats", "dogs"], root=str(tmp_path)).files()


def test_fortune_texts_are_unlabelled_and_encoded_with_the_id_vocabulary(tmp_path):
    _fortune_file(tmp_path / "a", ["alpha beta", "alpha gamma", "beta", "alpha", "delta"])
    _fortune_file(tmp_path / "b", ["beta beta", "gamma", "x", "y", "z"])
    _fortune_file(tmp_path / "food", ["alpha pie", "zeta"])
    id_source = create_dataset("fortunes", categories=["a", "b"], root=str(tmp_path), length=3)
    ood = create_outlier_source("fortune-texts", categories=["food"], root=str(tmp_path))
    data = ood.load("train", shape=id_source.shape)
    vocab = id_source.vocabulary()
    assert "delta" not in vocab.words and "zeta" not in vocab.words  # test entries: unseen
    alpha = vocab.words.index("alpha") + 2
    assert data.tokens.tolist() == [[0, alpha, 1], [0, 0, 1]]
    assert data.labels.tolist() == [-1, -1]


def test_word_salad_is_seeded(tmp_path):
    words = tmp_path / "words"
    words.write_text("apple\nbanana\nCherry\ndate's\nelder\n")
    salad = create_dataset("word-salad", n=5, path=str(words))
    first, again, other = (salad.texts("test", s)[0] for s in (0, 0, 1))
    assert first == again and first != other
    used = {w for text in first for w in text.split()}
    assert used <= {"apple", "banana", "elder"}  # proper nouns and possessives left out
    assert all(10 <= len(t.split()) <= 40 for t in first)


@needs_debian_text
def test_real_fortunes_are_what_the_benchmark_says():
    source = create_dataset("fortunes")
    train, labels = source.texts("train")
    test, _ = source.texts("test")
    assert len(train) + len(test) > 2600 and len(test) == pytest.approx(len(train) / 4, rel=0.05)
    assert "Avoid strange women and temporary variables." in train + test
    assert sorted(set(labels)) == [0, 1, 2, 3]
    excuses = create_dataset("fortune-texts", categories=["bofh-excuses"]).texts("test")[0]
    assert len(excuses) > 400 and all(e.startswith("BOFH excuse #") for e in excuses)
    licences = create_dataset("license-text").texts("test")[0]
    assert len(licences) > 200 and any("warranty" in p.lower() for p in licences)


@needs_debian_text
def test_text_quickstart_validates_with_the_gru_and_skips_nothing():
    notes = []

    class Notes(Progress):
        def log(self, message):
            notes.append(message)

    runner = Runner(load_benchmark("text-quickstart"), device="cpu", progress=Notes())
    runner.validate()
    assert notes == [] and runner.bench.recall == 0.9
    source = runner.sources.source("dataset", runner.bench.id_datasets[0])
    length, size, digest = source.shape
    assert (length, size) == (48, 10002) and len(digest) == 20
