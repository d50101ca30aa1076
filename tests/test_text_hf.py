"""The paper's NLP loaders on tiny files in each real on-disk format, offline."""

from __future__ import annotations

import json

import pytest

from oebench.errors import DataNotFoundError, UserError
from oebench.registry.lookup import create_dataset, create_outlier_source

pytest.importorskip("datasets")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return str(path)


def test_20newsgroups_jsonl_labels_and_vocabulary_from_train_only(tmp_path):
    """SetFit's JSON lines (text, label, label_text); the vocabulary never sees test words."""
    rows = [
        {"text": "the space shuttle launch", "label": 1, "label_text": "sci.space"},
        {"text": "hockey game tonight", "label": 0, "label_text": "rec.sport.hockey"},
    ]
    test = [{"text": "shuttle zebra", "label": 1, "label_text": "sci.space"}]
    files = {"train": _jsonl(tmp_path / "train.jsonl", rows),
             "test": _jsonl(tmp_path / "test.jsonl", test)}  # fmt: skip
    source = create_dataset("20newsgroups", data_files=files, length=4)
    assert source.num_classes == 2 and source.modality == "text"
    vocab = source.vocabulary()
    assert "zebra" not in vocab.words and "shuttle" in vocab.words
    data = source.load("test")
    # pad first (0), then "shuttle" and <unk> (1) for the unseen "zebra"
    shuttle = vocab.words.index("shuttle") + 2
    assert data.tokens.tolist() == [[0, 0, shuttle, 1]]
    assert data.labels.tolist() == [1]


def test_trec_original_label_files_fine_classes(tmp_path):
    """The original TREC format: ``COARSE:fine question``; 50 fine classes in the paper."""
    (tmp_path / "train_5500.label").write_bytes(
        b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
        b"ENTY:cremat What films featured the character Popeye Doyle ?\n"
        b"DESC:manner How can I find a list of celebrities ' real names ?\n"
    )
    (tmp_path / "TREC_10.label").write_bytes(b"ENTY:cremat What film won in 1990 ?\n")
    files = {"train": str(tmp_path / "train_5500.label"), "test": str(tmp_path / "TREC_10.label")}
    source = create_dataset("trec", data_files=files)
    assert source.load("test").labels.tolist() == [1]  # numbered by train's names, even first
    texts, labels = source.texts("train")
    assert texts[1] == "What films featured the character Popeye Doyle ?"
    # string labels are numbered in sorted order: DESC:manner = 0, ENTY:cremat = 1
    assert labels == [0, 1, 0] and source.num_classes == 2
    assert source.load("test").labels.tolist() == [1]


def test_sst2_glue_tsv_test_is_the_validation_split(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nhide new secretions \t0\ngreat fun \t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\n")
    files = {"train": str(tmp_path / "train.tsv"), "validation": str(tmp_path / "dev.tsv")}
    source = create_dataset("sst2", data_files=files)
    texts, labels = source.texts("test")
    assert texts == ["it 's a charming journey . "] and labels == [1]
    assert source.num_classes == 2


def test_ood_sets_parquet_and_plain_text(tmp_path):
    """SNLI / IMDB / Yelp as HF Parquet, Multi30K and WMT16 as raw text files (one per line)."""
    snli = _parquet(
        tmp_path / "snli.parquet",
        {"premise": ["A man rides a horse."], "hypothesis": ["A person is outdoors."],
         "label": [0]},
    )  # fmt: skip
    assert create_dataset("snli", data_files=snli).texts("test") == (
        ["A person is outdoors."],
        None,
    )
    imdb = _parquet(tmp_path / "imdb.parquet", {"text": ["Great film.", "Bad."], "label": [1, 0]})
    assert create_dataset("imdb", data_files=imdb).texts("test")[0] == ["Great film.", "Bad."]
    yelp = _parquet(tmp_path / "yelp.parquet", {"label": [4], "text": ["Best tacos in town."]})
    assert create_dataset("yelp", data_files=yelp).texts("test")[0] == ["Best tacos in town."]
    (tmp_path / "test_2016_flickr.en").write_text("Two dogs play .\nA girl runs .\n")
    multi = create_dataset("multi30k", data_files=str(tmp_path / "test_2016_flickr.en"))
    assert multi.texts("test")[0] == ["Two dogs play .", "A girl runs ."]
    (tmp_path / "newstest2016.en").write_text("Obama welcomes Netanyahu\n")
    wmt = create_dataset("wmt16", data_files=str(tmp_path / "newstest2016.en"))
    assert wmt.texts("test")[0] == ["Obama welcomes Netanyahu"]


def test_ewt_conllu_genres(tmp_path):
    conllu = tmp_path / "en_ewt-ud-test.conllu"
    conllu.write_text(
        "# sent_id = weblog-blogspot.com_x_1\n# text = What if Google morphed?\n"
        "1\tWhat\twhat\tPRON\t_\t_\t0\troot\t_\t_\n\n"
        "# sent_id = email-enronsent01_01-0001\n# text = Please call me.\n"
        "1\tPlease\tplease\tINTJ\t_\t_\t0\troot\t_\t_\n\n"
    )
    both = create_dataset("ewt", data_files=str(conllu))
    assert both.texts("test")[0] == ["What if Google morphed?", "Please call me."]
    email = create_dataset("ewt", data_files=str(conllu), genres=["email"])
    assert email.texts("test")[0] == ["Please call me."]
    with pytest.raises(UserError, match="unknown EWT genre"):
        create_dataset("ewt", data_files=str(conllu), genres=["tweets"])


def test_wikitext_raw_drops_headings_and_blank_lines(tmp_path):
    raw = tmp_path / "wiki.train.raw"
    raw.write_text(
        " \n = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 is a tactical role "
        "@-@ playing video game .\n = = Gameplay = = \n It is short .\n"
    )
    source = create_outlier_source("wikitext-2", data_files=str(raw))
    texts, labels = source.texts("train")
    # "It is short ." has 4 words: below min_words = 5
    assert texts == ["Senjō no Valkyria 3 is a tactical role @-@ playing video game ."]
    assert labels is None


def test_hub_name_offline_is_one_line_data_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    source = create_dataset("imdb")
    with pytest.raises(DataNotFoundError, match="stanfordnlp/imdb.*--download"):
        source.files()


def test_missing_local_file_and_bad_column(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        create_dataset("imdb", data_files=str(tmp_path / "nope.parquet")).files()
    imdb = _parquet(tmp_path / "i.parquet", {"review": ["x y"], "label": [0]})
    with pytest.raises(UserError, match="no text column 'text'; columns: review, label"):
        create_dataset("imdb", data_files=imdb).texts("test")


def test_sst2_imdb_wikitext_run_end_to_end_on_local_files(tmp_path):
    """The oe-sst recipe's components through the runner, on tiny local files."""
    from oebench.bench.parse import parse_benchmark
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner

    good = ["a great , moving film", "wonderful acting", "charming and funny", "a joy"]
    bad = ["dull and flat", "a boring mess", "awful script", "tedious"]
    lines = [f"{t}\t{i % 2}" for pair in zip(good, bad, strict=True) for i, t in enumerate(pair)]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(lines * 3) + "\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    imdb = _parquet(tmp_path / "imdb.parquet", {"text": ["the plot of this movie"] * 6,
                                                "label": [0] * 6})  # fmt: skip
    (tmp_path / "wiki.train.raw").write_text(
        " = Title = \n" + " The river flows north through the valley of stones .\n" * 10
    )
    files = f'{{ train = "{tmp_path}/train.tsv", validation = "{tmp_path}/dev.tsv" }}'
    bench = parse_benchmark(f"""
name = "tiny-sst"
recall = 0.9
id_datasets = [{{ name = "sst2", length = 8, lower = false, data_files = {files} }}]
models = ["gru"]
detectors = ["msp"]
ood_datasets = [{{ name = "imdb", data_files = "{imdb}" }}]
[training]
epochs = 1
batch_size = 8
lr = 0.1
channels_last = false
[[trainings]]
name = "oe"
objective = {{ name = "oe", lam = 1.0 }}
outliers = {{ name = "wikitext-2", data_files = "{tmp_path}/wiki.train.raw" }}
outlier_batch_size = 8
""")
    runner = Runner(bench, device="cpu", use_cache=False)
    rows = run_here(runner)
    assert not runner.failures and [r["ood_dataset"] for r in rows] == ["imdb", "mean"]
    assert rows[0]["n_id"] == 8 and rows[0]["n_ood"] == 6
    vocab = runner.sources.source("dataset", bench.id_datasets[0]).vocabulary()
    assert "great" in vocab.words and "plot" not in vocab.words and "river" not in vocab.words
