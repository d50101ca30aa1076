"""Real text that Debian packages ship: fortune cookies by category, licence texts, word lists.

``fortunes`` (package ``fortunes``): quotations filed by topic under
``/usr/share/games/fortunes``, one entry per block between lines holding ``%``; its
categories serve as ID classes, other categories as OOD sets and OE outliers. ``license-text``:
paragraphs of the licences under ``/usr/share/common-licenses`` (package ``base-files``, on
every Debian system). ``word-salad``: random sequences of English words from
``/usr/share/dict/words`` (package ``wamerican``): real words, no syntax or topic.
"""

from __future__ import annotations

from pathlib import Path

import oebench.api as oebench
from oebench.api import TextSource

FORTUNES = Path("/usr/share/games/fortunes")
LICENSES = Path("/usr/share/common-licenses")
WORDS = Path("/usr/share/dict/words")
#: the text quickstart's ID classes: four topics with distinct vocabularies
ID_CATEGORIES = ["computers", "politics", "startrek", "songs-poems"]
LICENSE_FILES = ["Apache-2.0", "Artistic", "GFDL-1.3", "GPL-3", "LGPL-3", "MPL-2.0"]


def _require(
    paths: list[Path], package: str, root: str = "", default: Path = FORTUNES
) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing and root and Path(root) != default and not Path(root).expanduser().is_dir():
        raise oebench.DataNotFoundError(  # a folder the user named: never the package's hint
            f"{package} texts not found: root = {root!r} is not a folder; give the folder "
            f"that holds the files, or leave 'root' out for {default}"
        )
    if missing:
        raise oebench.DataNotFoundError(
            f"{', '.join(missing[:3])} not found: install Debian's {package} package "
            f"(apt-get install {package})"
        )
    return paths


def read_fortunes(path: Path) -> list[str]:
    """The entries of one fortune file: blocks between lines holding only ``%``."""
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    entries, block = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(block).strip())
            block = []
        else:
            block.append(line)
    entries.append("\n".join(block).strip())
    return [e for e in entries if e]


class Fortunes(TextSource):
    """Fortune cookies of the given ``categories``, one class each (in the order given).

    Every ``test_every``-th entry of each category (the 5th, 10th, ...) is the test split, the
    others the train split: fixed, whatever the seed.
    """

    splits = ("train", "test")

    def __init__(
        self,
        categories: list[str] | None = None,
        root: str = str(FORTUNES),
        test_every: int = 5,
        length: int = 64,
        vocab_size: int = 10000,
    ):
        self.categories = list(categories or ID_CATEGORIES)
        if len(self.categories) < 2:
            raise ValueError("fortunes needs at least two categories (the classes)")
        if test_every < 2:
            raise ValueError(f"test_every must be at least 2, got {test_every}")
        self.root, self.test_every = root, int(test_every)
        self.length, self.vocab_size = int(length), int(vocab_size)

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.categories)

    def files(self) -> list[Path]:
        return _require([Path(self.root) / c for c in self.categories], "fortunes", self.root)

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], list[int]]:
        texts, labels = [], []
        for label, category in enumerate(self.categories):
            for i, entry in enumerate(read_fortunes(Path(self.root) / category)):
                if (i % self.test_every == self.test_every - 1) == (split == "test"):
                    texts.append(entry)
                    labels.append(label)
        return texts, labels


class FortuneTexts(TextSource):
    """Every fortune cookie of the given ``categories``, unlabelled: an OOD set or outliers."""

    splits = ("train", "test")
    num_classes = None

    def __init__(self, categories: list[str], root: str = str(FORTUNES)):
        if not categories:
            raise ValueError("fortune-texts needs at least one category")
        self.categories, self.root = list(categories), root

    def files(self) -> list[Path]:
        return _require([Path(self.root) / c for c in self.categories], "fortunes", self.root)

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], None]:
        return [e for c in self.categories for e in read_fortunes(Path(self.root) / c)], None


class LicenseText(TextSource):
    """Paragraphs (8 words or more) of software licences: legal prose, a far-OOD set."""

    num_classes = None

    def __init__(self, files: list[str] | None = None, root: str = str(LICENSES)):
        self.names, self.root = list(files or LICENSE_FILES), root

    def files(self) -> list[Path]:
        return _require(
            [Path(self.root) / n for n in self.names], "base-files", self.root, LICENSES
        )

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], None]:
        seen, texts = set(), []
        for path in self.files():
            for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                paragraph = " ".join(block.split())
                if len(paragraph.split()) >= 8 and paragraph not in seen:
                    seen.add(paragraph)
                    texts.append(paragraph)
        return texts, None


class WordSalad(TextSource):
    """``n`` texts of 10 to 40 words drawn at random (seeded) from a word list."""

    num_classes = None

    def __init__(self, n: int = 500, path: str = str(WORDS)):
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.path = int(n), path

    def files(self) -> list[Path]:
        return _require([Path(self.path)], "wamerican")

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], None]:
        import numpy as np

        words = [w for w in Path(self.path).read_text().split() if w.isalpha() and w.islower()]
        rng = np.random.default_rng([seed, self.n])
        sizes = rng.integers(10, 41, size=self.n)
        return [" ".join(words[i] for i in rng.integers(0, len(words), k)) for k in sizes], None


@oebench.hookimpl
def register_datasets(register):
    register(
        "fortunes",
        Fortunes,
        description="Debian fortune cookies, one class per category (default: computers, "
        "politics, startrek, songs-poems); every 5th entry is test",
    )
    register(
        "fortune-texts",
        FortuneTexts,
        description="every fortune cookie of the given categories, unlabelled (OOD sets)",
    )
    register(
        "license-text",
        LicenseText,
        description="paragraphs of licences in /usr/share/common-licenses (far-OOD text)",
    )
    register(
        "word-salad",
        WordSalad,
        description="random sequences of 10-40 English words from /usr/share/dict/words",
    )


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "fortune-texts",
        FortuneTexts,
        description="every fortune cookie of the given categories (OE outliers for text)",
    )
