"""The text modality: word-level tokens, a vocabulary from the ID training split, token tensors.

A ``TextSource`` only says which texts (and labels) a split holds (``texts(split, seed)``);
``load`` turns them into fixed-length token ids. The vocabulary is built from the training
split of the ID dataset alone (the OE paper's setup: the ``max_size`` most frequent words,
plus ``<pad>`` = 0 and ``<unk>`` = 1), and OOD sets and outliers are encoded with the ID
dataset's vocabulary: the ID source's input spec ``shape = (length, vocabulary size,
vocabulary digest)`` reaches their ``load(split, shape=...)`` the way an image ID dataset's
(C, H, W) does. Vocabularies are cached under ``<cache>/vocab/<digest>.json``, keyed by what
they were built from (``from-<key>.json`` names the digest). Both files hold the name they were
written under and a checksum over it and their content: a damaged file, or one copied or
swapped to another name, costs one warning line, is removed, and the vocabulary is built again.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oebench.contracts.data import OOD_LABEL, TEXT, Source

if TYPE_CHECKING:
    import torch

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
#: words (letters and digits, inner apostrophes) and single punctuation marks
TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]")
#: bump when tokenisation or encoding changes (it is part of every vocabulary digest)
TEXT_VERSION = 1
#: bump when what a cached vocabulary file holds changes (2: its name and a checksum)
VOCAB_FILE_FORMAT = 2

#: vocabularies built or read in this process, by digest
_VOCABULARIES: dict[str, Vocabulary] = {}


def tokenize(text: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks of ``text`` (lower-cased unless ``lower`` is False)."""
    return TOKEN.findall(text.lower() if lower else text)


@dataclass(frozen=True)
class Vocabulary:
    """Word -> id for ids 2.. (0 is ``<pad>``, 1 is ``<unk>``), with the encoding settings."""

    words: tuple[str, ...]
    length: int
    lower: bool = True

    @property
    def size(self) -> int:
        """Number of ids, the two special ones included."""
        return len(self.words) + len(SPECIALS)

    @property
    def digest(self) -> str:
        """A hash of the words and settings: names this vocabulary in input specs and caches."""
        text = json.dumps([TEXT_VERSION, self.length, self.lower, self.words])
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def shape(self) -> tuple[int, int, str]:
        """The input spec models and OOD sets receive: (length, size, digest)."""
        return (self.length, self.size, self.digest)

    def ids(self, text: str) -> list[int]:
        """Token ids of one text: its first ``length`` tokens, padded at the front (the
        reference's ``pad_first``: a recurrent model reads the words last)."""
        index = self._index()
        ids = [index.get(t, UNK) for t in tokenize(text, self.lower)[: self.length]]
        return [PAD] * (self.length - len(ids)) + ids

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, length) int64 token ids."""
        import torch

        return torch.tensor([self.ids(t) for t in texts], dtype=torch.long).view(
            len(texts), self.length
        )

    def _index(self) -> dict[str, int]:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {w: i + len(SPECIALS) for i, w in enumerate(self.words)}
            object.__setattr__(self, "_index_cache", index)
        return index


def build_vocabulary(
    texts: Iterable[str], length: int, max_size: int = 10000, lower: bool = True
) -> Vocabulary:
    """The ``max_size`` most frequent tokens of ``texts`` (ties: alphabetical order)."""
    counts = Counter(t for text in texts for t in tokenize(text, lower))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return Vocabulary(tuple(w for w, _ in ranked[:max_size]), length, lower)


def vocabulary(digest: str) -> Vocabulary:
    """The vocabulary named by ``digest``: built in this process, or read from the cache."""
    if digest in _VOCABULARIES:
        return _VOCABULARIES[digest]
    saved = _read_cached(digest)
    vocab = None
    try:
        if saved is not None:
            vocab = Vocabulary(tuple(saved["words"]), int(saved["length"]), bool(saved["lower"]))
    except (ValueError, KeyError, TypeError):
        vocab = None
    if vocab is None or vocab.digest != digest:
        if saved is not None:
            _discard(_vocab_dir() / f"{digest}.json", "its words do not hash to its name")
        raise ValueError(f"no vocabulary {digest}: build it from the ID dataset first")
    _VOCABULARIES[digest] = vocab
    return vocab


def _file_checksum(body: dict[str, Any]) -> str:
    """sha256 over a cache file's content and the name it was written under."""
    fields = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_cached(name: str) -> dict[str, Any] | None:
    """The cache file ``<vocab>/<name>.json`` when whole and written under that name; a damaged
    or misplaced one is reported in one line and removed (one of another format is ignored)."""
    path = _vocab_dir() / f"{name}.json"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return _discard(path, f"unreadable: {type(exc).__name__}")
    if not isinstance(body, dict):
        return _discard(path, "not a JSON object")
    if body.get("format") != VOCAB_FILE_FORMAT:
        return None
    if body.get("name") != name:
        return _discard(path, f"it was written as {str(body.get('name'))[:32]!r}")
    if body.get("checksum") != _file_checksum(body):
        return _discard(path, "checksum mismatch: the file was damaged or edited")
    return body


def _discard(path: Any, problem: str) -> None:
    from oebench.core.files import remove_cache_file

    print(
        f"oebench: warning: ignoring the cached vocabulary file {path} ({problem}); "
        "building the vocabulary again",
        file=sys.stderr,
    )
    remove_cache_file(path)
    return None


def keep_vocabulary(vocab: Vocabulary) -> None:
    """Make ``vocab`` known to this process: ``vocabulary(vocab.digest)`` returns it."""
    _VOCABULARIES[vocab.digest] = vocab


def _vocab_dir() -> Any:
    from oebench.core.settings import cache_dir

    return cache_dir() / "vocab"


def _remember(vocab: Vocabulary, key: str) -> None:
    """Keep ``vocab`` in this process and on disk (``<digest>.json`` and a ``key`` link; an
    unwritable cache costs one warning). A file there already is rewritten unless it is whole
    and says the same."""
    from oebench.core.files import write_cache_file

    _VOCABULARIES[vocab.digest] = vocab
    folder = _vocab_dir()
    body = {"words": list(vocab.words), "length": vocab.length, "lower": vocab.lower}
    for name, payload in ((vocab.digest, body), (f"from-{key}", {"digest": vocab.digest})):
        full = {"format": VOCAB_FILE_FORMAT, "name": name, **payload}
        full["checksum"] = _file_checksum(full)
        path = folder / f"{name}.json"
        written = (path.exists() and _read_cached(name) == full) or write_cache_file(
            None, path, lambda tmp, p=full: _write_json(tmp, p)
        )
        if not written:
            return


def _write_json(path: str, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)


def _cached_digest(key: str) -> str | None:
    """The digest of the vocabulary built before from the same texts and settings."""
    link = _read_cached(f"from-{key}")
    digest = link.get("digest") if link else None
    if not isinstance(digest, str):
        return None
    try:
        vocabulary(digest)
    except ValueError:
        return None
    return digest


class TensorTokens:
    """An in-memory text dataset: ``tokens`` (N, L) int64 ids in [0, ``vocab_size``), labels."""

    modality = TEXT

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor | None, vocab_size: int):
        import torch

        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (N, L), got {tuple(tokens.shape)}")
        self.tokens = tokens.long()
        self.labels = (
            labels.long()
            if labels is not None
            else torch.full((len(tokens),), OOD_LABEL, dtype=torch.long)
        )
        self.vocab_size = int(vocab_size)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tokens[index], int(self.labels[index])

    def on(self, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and labels kept on ``device`` (copied once)."""
        cached = getattr(self, "_on_device", None)
        if cached is None or cached[0] != device:
            cached = (device, self.tokens.to(device), self.labels.to(device))
            self._on_device = cached
        return cached[1], cached[2]


class TextSource(Source):
    """A named source of texts: an ID dataset, an OOD test set or auxiliary outliers.

    Implement ``texts(split, seed)``: the split's texts and their integer labels (``None``
    when unlabelled). ``load`` encodes them: an ID dataset (``shape=None``) with its own
    vocabulary, built from its ``train`` split only; an OOD set or outlier source with the ID
    dataset's vocabulary, which ``shape`` names. Options ``length`` (tokens per text, default
    64) and ``vocab_size`` (most frequent training words kept, default 10000) shape the
    vocabulary; ``lower`` lower-cases before tokenising.
    """

    modality = TEXT
    #: no normalisation: token ids reach the model as they are
    mean = None
    std = None
    length: int = 64
    vocab_size: int = 10000
    lower: bool = True

    @abstractmethod
    def texts(self, split: str, seed: int = 0) -> tuple[list[str], list[int] | None]:
        """The split's texts, and their labels in [0, num_classes) (``None``: unlabelled)."""

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """(length, vocabulary size, digest) for a source with a labelled train split (an ID
        dataset); ``(length,)`` for others."""
        if self.num_classes and "train" in self.splits:
            return self.vocabulary().shape
        return (self.length,)

    def vocabulary(self) -> Vocabulary:
        """This source's vocabulary, from its training split (built once, cached on disk)."""
        vocab = self.__dict__.get("_vocab")
        if vocab is not None:
            return vocab
        texts, _ = self.texts("train", 0)
        settings = [TEXT_VERSION, self.length, self.vocab_size, self.lower]
        key = hashlib.sha256(json.dumps([settings, texts]).encode()).hexdigest()[:20]
        digest = _cached_digest(key)
        if digest is not None:
            vocab = vocabulary(digest)
        else:
            vocab = build_vocabulary(texts, self.length, self.vocab_size, self.lower)
            _remember(vocab, key)
        self.__dict__["_vocab"] = vocab
        return vocab

    def load(self, split: str, *, shape: Any = None, seed: int = 0) -> TensorTokens:
        vocab = self.vocabulary() if shape is None else vocabulary(str(shape[2]))
        texts, labels = self.texts(split, seed)
        if not texts:
            raise ValueError(f"split {split!r} holds no texts")
        import torch

        ids = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        return TensorTokens(vocab.encode(texts), ids, vocab.size)

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if not k.startswith("_")}
