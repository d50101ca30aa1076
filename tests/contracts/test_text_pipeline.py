"""The text modality: tokens, vocabulary, data checks, batching, the GRU, modality checks, a run."""

from __future__ import annotations

import pytest
import torch

import oebench
from oebench.bench.parse import parse_benchmark
from oebench.contracts.checks import ContractError, check_split
from oebench.contracts.model import Classifier
from oebench.contracts.text import (
    PAD,
    UNK,
    TensorTokens,
    TextSource,
    Vocabulary,
    build_vocabulary,
    tokenize,
    vocabulary,
)
from oebench.errors import UserError
from oebench.execute.drive import run_here
from oebench.execute.outputs import iterate_batches
from oebench.execute.runner import Progress, Runner

# -- tokens and vocabulary ------------------------------------------------------------------------


def test_tokenize_words_and_punctuation_lowercased():
    assert tokenize("Don't PANIC, it's 42!") == ["don't", "panic", ",", "it's", "42", "!"]
    assert tokenize("Hello", lower=False) == ["Hello"]


def test_vocabulary_ranks_by_count_then_alphabet_and_caps_size():
    vocab = build_vocabulary(["b a c", "c b", "c d"], length=3, max_size=3)
    # counts: c 3, b 2, a 1, d 1 -> a before d on the tie, d cut by max_size
    assert vocab.words == ("c", "b", "a")
    assert vocab.size == 5 and vocab.shape == (3, 5, vocab.digest)


def test_encode_pads_first_truncates_keeps_first_tokens_and_marks_unknown():
    vocab = Vocabulary(("c", "b", "a"), length=3)
    ids = vocab.encode(["a", "b zebra", "a b c a"]).tolist()
    # ids: c=2, b=3, a=4; padding in front; the first `length` tokens kept
    assert ids == [[PAD, PAD, 4], [PAD, 3, UNK], [4, 3, 2]]


def test_digest_depends_on_words_and_length():
    a = Vocabulary(("x", "y"), 8)
    assert a.digest == Vocabulary(("x", "y"), 8).digest
    assert a.digest != Vocabulary(("y", "x"), 8).digest != Vocabulary(("x", "y"), 9).digest


class Toy(TextSource):
    """Two topics of made-up sentences; ``texts`` counts its calls."""

    splits = ("train", "test")
    num_classes = 2
    POOLS = (["cat", "dog", "bird", "fish"], ["car", "bus", "train", "plane"])

    def __init__(self, n: int = 40, length: int = 6):
        self.n, self.length = n, length
        self.calls = 0

    def texts(self, split, seed=0):
        self.calls += 1
        offset = 0 if split == "train" else 1
        texts = [" ".join(self.POOLS[i % 2][(i + k + offset) % 4] for k in range(3))
                 for i in range(self.n)]  # fmt: skip
        if split == "test":
            texts[0] += " unseen"
        return texts, [i % 2 for i in range(self.n)]

    def config(self):
        return {"class": "Toy", "n": self.n, "length": self.length}


class ToyOod(TextSource):
    num_classes = None
    splits = ("train", "test")

    def texts(self, split, seed=0):
        return ["stock market bond yield", "cat car stock"], None


def test_vocabulary_comes_from_train_split_only_and_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path))
    source = Toy()
    vocab = source.vocabulary()
    assert "unseen" not in vocab.words and set(vocab.words) == {*Toy.POOLS[0], *Toy.POOLS[1]}
    assert (tmp_path / "vocab" / f"{vocab.digest}.json").is_file()
    # an OOD set is encoded with the ID vocabulary that the input spec names
    ood = ToyOod().load("test", shape=source.shape)
    cat, car = vocab.words.index("cat") + 2, vocab.words.index("car") + 2
    assert ood.tokens.tolist()[1] == [PAD, PAD, PAD, cat, car, UNK]
    # a new process finds it on disk by digest
    import oebench.contracts.text as text

    monkeypatch.setattr(text, "_VOCABULARIES", {})
    assert vocabulary(vocab.digest) == vocab
    again = Toy()
    assert again.vocabulary() == vocab and again.calls == 1


# -- data checks and batching --------------------------------------------------------------------


def test_check_split_accepts_tokens_and_refuses_bad_ids():
    good = TensorTokens(torch.tensor([[0, 2, 3], [1, 4, 4]]), torch.tensor([0, 1]), vocab_size=5)
    check_split(good, "train", num_classes=2, channels=3)
    with pytest.raises(ContractError, match=r"token ids must lie in \[0, 5\), found 0..5"):
        check_split(TensorTokens(torch.tensor([[0, 5]]), None, 5), "test", None)
    with pytest.raises(ContractError, match="found -1..2"):
        check_split(TensorTokens(torch.tensor([[-1, 2]]), None, 5), "test", None)
    with pytest.raises(ContractError, match=r"labels must lie in \[0, 2\), found 0..2"):
        check_split(TensorTokens(torch.tensor([[1], [2]]), torch.tensor([0, 2]), 5), "train", 2)


def test_check_split_refuses_float_tokens_in_a_custom_text_dataset():
    class Floats(torch.utils.data.Dataset):
        modality = "text"

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(4), 0

    with pytest.raises(ContractError, match="int64"):
        check_split(Floats(), "test", None)


def test_token_batches_are_unchanged_int64_in_the_given_order():
    tokens = torch.arange(12).view(6, 2)
    data = TensorTokens(tokens, torch.arange(6), vocab_size=12)
    order = torch.tensor([5, 0, 3, 1, 2, 4])
    got = list(iterate_batches(data, 4, (2, 12, "d"), torch.device("cpu"), order=order))
    assert [x.tolist() for x, _ in got] == [tokens[order[:4]].tolist(), tokens[order[4:]].tolist()]
    assert got[0][0].dtype == torch.int64 and got[1][1].tolist() == [2, 4]


def test_classifier_passes_token_ids_unnormalised():
    seen = []

    class Net(torch.nn.Module):
        def forward_features(self, x):
            seen.append(x)
            return x.float()

        def forward_head(self, f):
            return f

    model = Classifier(Net(), None, None)
    x = torch.tensor([[3, 1]])
    model(x)
    assert seen[0] is x and "mean" not in model.state_dict()


def test_gru_features_and_head():
    net = oebench.create_model("gru", 3, (5, 7, "digest"))
    x = torch.tensor([[0, 0, 2, 3, 6], [0, 0, 0, 0, 1]])
    features = net.forward_features(x)
    assert features.shape == (2, 128) and net.forward_head(features).shape == (2, 3)
    with pytest.raises(ValueError, match="text input spec"):
        oebench.create_model("gru", 3, (1, 28, 28))


# -- the engine ----------------------------------------------------------------------------------


class ToyPlugin:
    @oebench.hookimpl
    def register_datasets(self, register):
        register("toy-topics", Toy)
        register("toy-ood", ToyOod)

    @oebench.hookimpl
    def register_outlier_sources(self, register):
        register("toy-outliers", ToyOod)


BENCH = """
name = "toy-text"
seeds = [0]
protocol = "full"
recall = 0.9
id_datasets = ["toy-topics"]
models = ["{model}"]
detectors = ["msp", "energy", "mahalanobis", "odin"]
ood_datasets = ["{ood}"]
[training]
epochs = 2
batch_size = 16
lr = 0.1
channels_last = false
[[trainings]]
name = "baseline"
objective = "cross-entropy"
[[trainings]]
name = "oe"
objective = {{ name = "oe", lam = 1.0 }}
outliers = "toy-outliers"
from = "baseline"
epochs = 1
outlier_batch_size = 16
"""


class Log(Progress):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def _runner(model="gru", ood="toy-ood", use_cache=True):
    bench = parse_benchmark(BENCH.format(model=model, ood=ood))
    return Runner(bench, device="cpu", progress=Log(), use_cache=use_cache)


def test_image_model_on_text_data_is_one_line_before_any_work(oebench_plugin):
    oebench_plugin(ToyPlugin(), "toy-text")
    with pytest.raises(UserError) as err:
        _runner(model="small-cnn").validate()
    message = str(err.value)
    assert "\n" not in message
    assert "model 'small-cnn' accepts image data, but ID dataset 'toy-topics' is text" in message
    assert "models for text: gru" in message


def test_image_ood_set_with_text_id_is_refused(oebench_plugin):
    oebench_plugin(ToyPlugin(), "toy-text")
    with pytest.raises(UserError, match="OOD dataset 'gaussian' is image data, but ID dataset"):
        _runner(ood="gaussian").validate()


def test_text_run_skips_odin_with_a_note_and_repeats_exactly(oebench_plugin):
    oebench_plugin(ToyPlugin(), "toy-text")
    runs = []
    for _ in range(2):
        runner = _runner(use_cache=False)
        rows = run_here(runner)
        runs.append(rows)
        assert not runner.failures and not runner.failed_cells
        notes = [m for m in runner.progress.lines if "odin" in m]
        assert notes == ["note: detector 'odin' does not apply to text data: skipped"]
    rows = runs[0]
    assert {r["detector"] for r in rows} == {"msp", "energy", "mahalanobis"}
    assert {r["training"] for r in rows} == {"baseline", "oe"}
    assert all(r["recall"] == 0.9 for r in rows)
    key = ("training", "detector", "ood_dataset", "auroc", "fpr95", "id_accuracy")
    assert [tuple(r[k] for k in key) for r in rows] == [tuple(r[k] for k in key) for r in runs[1]]


def test_contributing_text_example_runs_as_written(tmp_path):
    """The text-source example in CONTRIBUTING.md's "Modalities" section, executed."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "CONTRIBUTING.md").read_text()
    section = doc.split("### Modalities", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "CONTRIBUTING.md", "exec"), namespace)
    csv_file = tmp_path / "headlines.csv"
    csv_file.write_text(
        "split,text,label\ntrain,Stocks rally,0\ntrain,Team wins cup,1\ntest,Stocks fall,0\n"
    )
    source = namespace["Headlines"](str(csv_file), length=4)
    data = source.load("test")
    stocks = source.vocabulary().words.index("stocks") + 2
    assert data.tokens.tolist() == [[PAD, PAD, stocks, UNK]] and data.labels.tolist() == [0]
    assert source.modality == "text" and source.files() == [csv_file]


def test_plugin_kit_checks_text_datasets_outliers_and_models(oebench_plugin):
    from oebench.testing import check_dataset, check_model, check_outlier_source

    oebench_plugin(ToyPlugin(), "toy-text")
    assert check_dataset("toy-topics", "test").num_classes == 2
    check_dataset("toy-ood")
    check_outlier_source("toy-outliers")
    model = check_model("gru", classes=3, shape=(6, 12, "any"))
    assert model.mean is None


def test_plugin_kit_reports_a_text_dataset_with_bad_labels(oebench_plugin):
    from oebench.testing import check_dataset

    class BadLabels(Toy):
        def texts(self, split, seed=0):
            texts, _ = super().texts(split, seed)
            return texts, [2] * len(texts)

    class Plugin:
        @oebench.hookimpl
        def register_datasets(self, register):
            register("toy-bad-labels", BadLabels)

    oebench_plugin(Plugin(), "toy-bad")
    with pytest.raises(AssertionError, match=r"labels must lie in \[0, 2\)"):
        check_dataset("toy-bad-labels", "test")
