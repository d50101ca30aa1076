"""Text datasets through Hugging Face ``datasets``: the OE paper's NLP sets, hub or local files.

Every loader takes either ``path`` (a hub name; fetched only with ``--download``, else read
from the local Hugging Face cache) or ``data_files`` (local Parquet, JSON lines, CSV/TSV or
plain-text files, the format taken from the extension unless ``format`` says). The named
loaders (``20newsgroups``, ``trec``, ``sst2``, ``snli``, ``imdb``, ``multi30k``, ``wmt16``,
``yelp``, ``ewt``, ``wikitext-2``, ``wikitext-103``) only preset the hub name, columns and
splits of the generic ``hf-text``. Nothing is downloaded unless ``--download`` is given.

Public copies: the English Web Treebank itself is licensed by the LDC (LDC2012T13) and has
no public copy; ``ewt`` reads Universal Dependencies' English-EWT (the same web text, CC
BY-SA 4.0) from CoNLL-U files (default ``<data root>/UD_English-EWT/en_ewt-ud-test.conllu``),
its genres named by the ``sent_id`` prefix. The paper's
20 Newsgroups, TREC, SST-2, SNLI, IMDB, Multi30K, WMT16, Yelp and WikiText have hub copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import TextSource
from oebench_plugins.hf_datasets import local_files as _local_files

#: file extension -> ``datasets`` builder (and CSV delimiter)
FORMATS = {
    ".parquet": ("parquet", None),
    ".json": ("json", None),
    ".jsonl": ("json", None),
    ".csv": ("csv", ","),
    ".tsv": ("csv", "\t"),
    ".conllu": ("conllu", None),
    ".label": ("trec", None),
}
EWT_GENRES = ("answers", "email", "newsgroup", "reviews", "weblog")
#: UD English-EWT's test file, from github.com/UniversalDependencies/UD_English-EWT
EWT_FILE = "UD_English-EWT/en_ewt-ud-test.conllu"


def local_files(data_files: Any) -> list[Path]:
    """Files matched by ``data_files`` (a path, glob, list, or split -> files table), sorted;
    a one-line DataNotFoundError naming the pattern that matches nothing."""
    return _local_files(data_files, "text file(s)")


def _by_split(data_files: Any) -> dict[str, list[str]]:
    """``data_files`` as split -> patterns (a bare path or list serves every split)."""
    if isinstance(data_files, dict):
        return {k: [v] if isinstance(v, str) else list(v) for k, v in data_files.items()}
    return {"train": [data_files] if isinstance(data_files, str) else list(data_files)}


def _column(row: dict, column: str) -> Any:
    """``row[column]``; a dotted name reads nested fields (``translation.en``); a row of a
    plain-text file (one ``text`` field) gives its line whatever the column."""
    if len(row) == 1 and "text" in row:
        return row["text"]
    value: Any = row
    for part in column.split("."):
        value = value[part]
    return value


class HfText(TextSource):
    """Texts (and labels) from Hugging Face ``datasets``, loaded into memory.

    ``path`` (+ ``config``) names a hub dataset; ``data_files`` local files instead. oebench's
    ``train`` / ``test`` read the HF splits of those names, ``splits`` maps them elsewhere
    (``{test = "validation"}``), ``split`` pins one HF split for both, and a dataset with one
    split serves it for any name. ``text_column`` may be dotted (``translation.en``); labels:
    a ``labels`` list gives each class name its position; otherwise ClassLabel ids and
    integers are kept, strings numbered in the sorted order of the train split's names.
    ``max_texts`` keeps a seeded random subset of a split (large OOD sets); ``min_words``
    drops shorter texts (blank lines).
    """

    #: True for the OOD-set and outlier presets: labels are neither read nor used
    unlabelled = False

    def __init__(
        self,
        path: str | None = None,
        config: str | None = None,
        data_files: Any = None,
        format: str | None = None,
        split: str | None = None,
        splits: dict[str, str] | None = None,
        text_column: str = "text",
        label_column: str | None = "label",
        labels: list[str] | None = None,
        max_texts: int | None = None,
        min_words: int = 1,
        length: int = 64,
        vocab_size: int = 10000,
        lower: bool = True,
    ):
        if bool(path) == bool(data_files):
            raise oebench.UserError(
                f"{type(self).__name__}: give exactly one of path (hub name) or data_files"
            )
        if isinstance(data_files, tuple):
            data_files = list(data_files)
        self.path, self.config_name, self.data_files, self.format = path, config, data_files, format
        self.split, self.split_map = split, dict(splits or {})
        self.text_column, self.label_column, self.labels = text_column, label_column, labels
        self.max_texts, self.min_words = max_texts, int(min_words)
        self.length, self.vocab_size, self.lower = int(length), int(vocab_size), bool(lower)

    # -- metadata --------------------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train", "test")

    @property
    def num_classes(self) -> int | None:  # type: ignore[override]
        if self.unlabelled or not self.label_column:
            return None
        if self.labels is not None:
            return len(self.labels)
        ids = self._labels(self.hf_split("train"))
        return int(max(ids)) + 1 if ids else None

    def files(self) -> list[Path]:
        if self.path:
            if not oebench.download_allowed():
                self.hf_dict()  # a one-line DataNotFoundError now when it is not cached
            return []
        return local_files(self.data_files)

    # -- loading ---------------------------------------------------------------------------------
    def hf_dict(self) -> dict[str, Any]:
        """split name -> a list of rows (dicts), loaded once."""
        cached = self.__dict__.get("_rows")
        if cached is None:
            cached = self._hub() if self.path else self._local()
            self.__dict__["_rows"] = cached
        return cached

    def _hub(self) -> dict[str, Any]:
        import datasets

        from oebench_plugins.hf_datasets import offline_unless_allowed

        with offline_unless_allowed():
            try:
                data = datasets.load_dataset(self.path, self.config_name)
            except (ConnectionError, FileNotFoundError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                hint = "" if oebench.download_allowed() else "; rerun with --download to fetch it"
                raise oebench.DataNotFoundError(
                    f"hub dataset {self.path!r} is not available ({reason}){hint}, or give "
                    "data_files (local files) instead"
                ) from None
        return {name: list(part) for name, part in data.items()}

    def _local(self) -> dict[str, Any]:
        local_files(self.data_files)
        return {
            split: [row for f in sorted(local_files(patterns)) for row in self._read(f)]
            for split, patterns in _by_split(self.data_files).items()
        }

    def _read(self, path: Path) -> list[dict]:
        """Rows of one local file, through ``datasets`` (or the CoNLL-U / TREC readers)."""
        builder, sep = FORMATS.get(path.suffix.lower(), ("text", None))
        if self.format:
            builder, sep = self.format, ("\t" if self.format == "tsv" else sep)
            builder = "csv" if builder == "tsv" else builder
        if builder == "conllu":
            return read_conllu(path)
        if builder == "trec":
            return read_trec(path)
        import datasets

        from oebench_plugins.hf_datasets import offline_unless_allowed

        kwargs = {"delimiter": sep} if builder == "csv" and sep else {}
        cache = str(oebench.cache_dir() / "hf")
        with offline_unless_allowed():
            data = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, **kwargs
            )
        return list(data)

    def hf_split(self, split: str) -> list[dict]:
        """The rows oebench's ``split`` reads."""
        data = self.hf_dict()
        want = self.split or self.split_map.get(split, split)
        if want in data:
            return data[want]
        if len(data) == 1:
            return data[next(iter(data))]
        raise oebench.UserError(
            f"{type(self).__name__}: no split {want!r}; splits: {', '.join(data)} "
            "(the 'split' option pins one, 'splits' maps oebench's train/test)"
        )

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], list[int] | None]:
        rows = self.hf_split(split)
        plain = rows and len(rows[0]) == 1 and "text" in rows[0]
        if rows and not plain and self.text_column.split(".")[0] not in rows[0]:
            raise oebench.UserError(
                f"{type(self).__name__}: no text column {self.text_column!r}; columns: "
                f"{', '.join(rows[0])}"
            )
        keep = [
            i
            for i, row in enumerate(rows)
            if len(str(_column(row, self.text_column)).split()) >= self.min_words
        ]
        if self.max_texts is not None and len(keep) > self.max_texts:
            import numpy as np

            rng = np.random.default_rng([seed, self.max_texts])
            keep = sorted(rng.choice(keep, size=self.max_texts, replace=False).tolist())
        texts = [str(_column(rows[i], self.text_column)) for i in keep]
        if self.unlabelled or not self.label_column:
            return texts, None
        labels = self._labels(rows)
        return texts, [labels[i] for i in keep]

    def _labels(self, rows: list[dict]) -> list[int]:
        """Integer labels of ``rows`` by the documented rule."""
        if not rows or self.label_column not in rows[0]:
            raise oebench.UserError(
                f"{type(self).__name__}: no label column {self.label_column!r}"
                + (f"; columns: {', '.join(rows[0])}" if rows else "")
            )
        values = [row[self.label_column] for row in rows]
        if self.labels is not None:
            ids = {name: i for i, name in enumerate(self.labels)}
            unknown = sorted({str(v) for v in values if str(v) not in ids})
            if unknown:
                raise oebench.UserError(
                    f"{type(self).__name__}: label(s) {', '.join(unknown[:5])} are not in "
                    f"'labels' ({', '.join(self.labels)})"
                )
            return [ids[str(v)] for v in values]
        if values and isinstance(values[0], str):
            if "_names" not in self.__dict__:  # numbered by the train split's names, always
                train = self.hf_split("train")
                self.__dict__["_names"] = sorted({str(r[self.label_column]) for r in train})
            ids = {name: i for i, name in enumerate(self.__dict__["_names"])}
            return [ids.get(v, -1) for v in values]  # unseen in train: -1, refused by the checks
        return [int(v) for v in values]


def read_conllu(path: Path) -> list[dict]:
    """Sentences of a CoNLL-U file: ``{"text", "sent_id", "genre"}`` from its comment lines
    (``# text = ...``, ``# sent_id = ...``; the genre is the ``sent_id`` prefix before ``-``)."""
    rows, current = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# sent_id ="):
            current["sent_id"] = line.split("=", 1)[1].strip()
        elif line.startswith("# text ="):
            current["text"] = line.split("=", 1)[1].strip()
        elif not line.strip() and current:
            if "text" in current:
                sent_id = current.get("sent_id", "")
                rows.append({**current, "genre": sent_id.split("-", 1)[0] if sent_id else ""})
            current = {}
    if current.get("text"):
        sent_id = current.get("sent_id", "")
        rows.append({**current, "genre": sent_id.split("-", 1)[0] if sent_id else ""})
    return rows


def read_trec(path: Path) -> list[dict]:
    """Questions of the original TREC files (``COARSE:fine question``, Latin-1):
    ``{"text", "coarse_label", "fine_label"}`` with string labels."""
    rows = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            rows.append({"text": text.strip(), "coarse_label": label.split(":")[0],
                         "fine_label": label})  # fmt: skip
    return rows


def _preset(name: str, doc: str, unlabelled: bool = True, **defaults: Any) -> type[HfText]:
    """An ``HfText`` subclass whose options default to ``defaults``."""

    def __init__(self, **options: Any) -> None:
        if options.get("data_files"):
            HfText.__init__(self, **{k: v for k, v in defaults.items() if k != "path"}
                            | {"config": None} | options)  # fmt: skip
        else:
            HfText.__init__(self, **defaults | options)

    cls = type(name, (HfText,), {"__init__": __init__, "__doc__": doc, "unlabelled": unlabelled})
    cls.__init__.__signature__ = _signature(defaults)  # type: ignore[attr-defined]
    return cls


def _signature(defaults: dict[str, Any]) -> Any:
    """HfText's keyword options with the preset's defaults (what ``oebench show`` lists)."""
    import inspect

    params = list(inspect.signature(HfText.__init__).parameters.values())
    return inspect.Signature(
        [params[0]] + [p.replace(default=defaults.get(p.name, p.default)) for p in params[1:]]
    )


class EwtText(HfText):
    """Universal Dependencies English-EWT sentences of the given ``genres`` (all by default)."""

    unlabelled = True

    def __init__(self, genres: list[str] | None = None, **options: Any):
        options.setdefault("split", "test")
        if not options.get("data_files") and not options.get("path"):
            # the hub copy (universal_dependencies) is a loading script that current
            # `datasets` no longer runs: read the CoNLL-U file under the data root
            options["data_files"] = str(oebench.data_root() / EWT_FILE)
        options.setdefault("label_column", None)
        super().__init__(**options)
        self.genres = list(genres or EWT_GENRES)
        unknown = sorted(set(self.genres) - set(EWT_GENRES))
        if unknown:
            raise ValueError(f"unknown EWT genre(s) {', '.join(unknown)}; known: {EWT_GENRES}")

    def hf_split(self, split: str) -> list[dict]:
        rows = super().hf_split(split)
        genre = lambda r: r.get("genre") or str(r.get("idx", "")).split("-", 1)[0]  # noqa: E731
        return [r for r in rows if genre(r) in self.genres]


#: the OE paper's NLP sets: (name, docstring, labelled, defaults)
PRESETS = [
    ("20newsgroups", "20 Newsgroups (20 classes): hub SetFit/20_newsgroups, or JSON lines "
     "with text/label", False, {"path": "SetFit/20_newsgroups"}),
    ("trec", "TREC question classification, 50 fine classes as in the paper: hub "
     "CogComp/trec, or the original train_5500.label / TREC_10.label files", False,
     {"path": "CogComp/trec", "label_column": "fine_label"}),
    ("sst2", "SST-2 (2 classes): hub stanfordnlp/sst2, or GLUE's TSV files (sentence, label); "
     "test = the labelled validation split", False,
     {"path": "stanfordnlp/sst2", "text_column": "sentence", "splits": {"test": "validation"}}),
    ("snli", "SNLI hypotheses (OOD): hub stanfordnlp/snli, or JSON/Parquet/CSV",
     True, {"path": "stanfordnlp/snli", "text_column": "hypothesis", "split": "test"}),
    ("imdb", "IMDB reviews (OOD): hub stanfordnlp/imdb, or Parquet with text",
     True, {"path": "stanfordnlp/imdb", "split": "test"}),
    ("multi30k", "Multi30K English captions (OOD): hub bentrevett/multi30k, or the raw "
     "test .en text file", True, {"path": "bentrevett/multi30k", "text_column": "en",
                                  "split": "test"}),
    ("wmt16", "WMT16 English news sentences (OOD): hub wmt/wmt16 de-en "
     "(translation.en), or text files", True,
     {"path": "wmt/wmt16", "config": "de-en", "text_column": "translation.en", "split": "test"}),
    ("yelp", "Yelp reviews (OOD): hub Yelp/yelp_review_full, or its CSV/Parquet",
     True, {"path": "Yelp/yelp_review_full", "split": "test"}),
    ("wikitext-2", "WikiText-2 lines (OE outliers): hub Salesforce/wikitext "
     "wikitext-2-raw-v1, or wiki.train.raw / .tokens files; headings and blank lines dropped",
     True, {"path": "Salesforce/wikitext", "config": "wikitext-2-raw-v1", "split": "train",
            "min_words": 5}),
    ("wikitext-103", "WikiText-103 lines (OE outliers): hub Salesforce/wikitext "
     "wikitext-103-raw-v1, or wiki.train.raw files", True,
     {"path": "Salesforce/wikitext", "config": "wikitext-103-raw-v1", "split": "train",
      "min_words": 5}),
]  # fmt: skip
LOADERS = {name: _preset(name, doc, unlabelled, **d) for name, doc, unlabelled, d in PRESETS}


class _NoHeadings:
    """Mixin: WikiText drops its ``= Heading =`` lines."""

    def texts(self, split: str, seed: int = 0) -> tuple[list[str], list[int] | None]:
        texts, _ = super().texts(split, seed)  # type: ignore[misc]
        return [t.strip() for t in texts if not t.strip().startswith("=")], None


for _name in ("wikitext-2", "wikitext-103"):
    LOADERS[_name] = type(_name, (_NoHeadings, LOADERS[_name]), {})


@oebench.hookimpl
def register_datasets(register):
    register("hf-text", HfText, description="text from Hugging Face datasets: hub or local files")
    for name, cls in LOADERS.items():
        register(name, cls, description=(cls.__doc__ or "").split(":")[0])
    register(
        "ewt",
        EwtText,
        description=f"English Web Treebank genres via UD English-EWT (OOD): <data root>/{EWT_FILE}",
    )


@oebench.hookimpl
def register_outlier_sources(register):
    for name in ("wikitext-2", "wikitext-103"):
        register(name, LOADERS[name], description=(LOADERS[name].__doc__ or "").split(":")[0])
    register("hf-text", HfText, description="outlier text from Hugging Face datasets")
