"""Code fingerprints follow what code means, not how it is written (issue 22, item 4): an edit
of a comment or a docstring, or a reformat, retrains and re-scores nothing; any change to what
the code does changes the fingerprint."""

import importlib
import shutil
import sys
import textwrap

import pytest

from oebench.keys.fingerprints import clear_caches, code_digest

PKG = "oebench_meaning_probe"

BASE = '''
"""A probe plugin module."""
import numpy as np

SCALE = 2.0
_CACHE = {}  # filled as it runs


def helper(x):
    """Add one."""
    return x + 1


def cached(x):
    _CACHE[x] = x
    return _CACHE[x]


class Det:
    """Scores by a scaled helper."""

    needs = frozenset({"logits"})

    def __init__(self, t: float = 1.0, names=("a", "b")):
        self.t = t

    def score(self, outputs):
        z = helper(outputs) * SCALE + cached(0)
        return -z / self.t
'''

#: edits that change how the code is written, not what it does
SAME = {
    "comment": [
        ("_CACHE = {}  # filled as it runs", "_CACHE = {}  # a cache, filled by cached()"),
        ("        z = helper", "        # the helper, scaled\n        z = helper"),
        ("return -z / self.t", "return -z / self.t  # higher: more anomalous"),
    ],
    "docstring": [
        ('"""A probe plugin module."""', '"""The probe module, described at length."""'),
        ('"""Add one."""', '"""Add one to every element.\n\n    More words.\n    """'),
        ('"""Scores by a scaled helper."""', "'''Another description.'''"),
        ("        self.t = t", '        """Keep t."""\n        self.t = t'),
    ],
    "reformat": [
        ('frozenset({"logits"})', "frozenset({'logits'})"),
        ("return -z / self.t", "return (-z) / (self.t)"),
        (
            "z = helper(outputs) * SCALE + cached(0)",
            "z = (\n helper(outputs)\n * SCALE\n + cached(0)\n )",
        ),
        ('names=("a", "b")', "names=(\n        'a',\n        'b',\n    )"),
        ("\n\nclass Det", "\n\n\n\nclass Det"),
    ],
}

#: edits that change what the code does
OTHER = {
    "constant": ("SCALE = 2.0", "SCALE = 2.5"),
    "operator": ("return -z / self.t", "return -z * self.t"),
    "default": ("t: float = 1.0", "t: float = 2.0"),
    "default tuple": ('names=("a", "b")', 'names=("a", "c")'),
    "helper body": ("return x + 1", "return x + 2"),
    "state declaration": ("_CACHE = {}", "_CACHE = {0: 1}"),
    "class attribute": ('frozenset({"logits"})', 'frozenset({"features"})'),
}


@pytest.fixture
def digest(tmp_path, monkeypatch):
    """``digest(source)``: the code fingerprint of ``Det`` in a fresh import of ``source``
    (each version in its own folder, as another process would import it)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    versions = iter(range(1000))

    def purge() -> None:
        for name in [n for n in sys.modules if n == PKG or n.startswith(PKG + ".")]:
            del sys.modules[name]

    def digest(source: str) -> str:
        folder = tmp_path / f"v{next(versions)}"
        (folder / PKG).mkdir(parents=True)
        (folder / PKG / "__init__.py").write_text("")
        (folder / PKG / "det.py").write_text(textwrap.dedent(source))
        purge()
        sys.path.insert(0, str(folder))
        try:
            importlib.invalidate_caches()
            clear_caches()
            found = code_digest(importlib.import_module(f"{PKG}.det").Det)
        finally:
            sys.path.remove(str(folder))
            shutil.rmtree(folder)
        assert found is not None
        return found

    yield digest
    purge()
    clear_caches()


def _edit(source: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


@pytest.mark.parametrize("kind", sorted(SAME))
def test_comment_docstring_and_reformat_only_edits_keep_the_fingerprint(digest, kind):
    before = digest(BASE)
    edited = _edit(BASE, *SAME[kind])
    compile(edited, "det.py", "exec")  # still Python
    assert digest(edited) == before


@pytest.mark.parametrize("kind", sorted(OTHER))
def test_edits_of_what_the_code_does_change_the_fingerprint(digest, kind):
    before = digest(BASE)
    changed = digest(_edit(BASE, OTHER[kind]))
    assert changed != before
    assert digest(BASE) == before  # and back


def test_all_cosmetic_edits_at_once_keep_it_and_a_real_one_among_them_does_not(digest):
    cosmetic = [e for edits in SAME.values() for e in edits]
    # several edits touch one line: apply those whose text is still there, in order
    source = BASE
    for old, new in cosmetic:
        if source.count(old) == 1:
            source = source.replace(old, new)
    assert source != BASE
    assert digest(source) == digest(BASE)
    assert digest(source.replace("return x + 1", "return x - 1")) != digest(BASE)


def test_code_without_source_ignores_its_docstring():
    """A function made by ``exec`` is hashed by its code object, whose first constant is its
    docstring: that constant is left out, the others are not."""
    made = []
    for doc, k in (("one", 2), ("two", 2), ("one", 3)):
        namespace: dict = {}
        exec(f'def f(x):\n    """{doc}"""\n    return x * {k}\n', namespace)
        made.append(namespace["f"])
    clear_caches()
    one, two, three = (code_digest(f) for f in made)
    assert one == two and one != three


def test_the_training_engine_is_fingerprinted_by_the_syntax_tree_of_its_code():
    """The engine's digest (a checkpoint's key) reads the loop and its helpers as the rest:
    a comment or docstring in ``oebench/execute/training.py`` retrains nothing."""
    import ast

    from oebench.execute.engine import training_code
    from oebench.execute.training import train
    from oebench.keys.pyfiles import code_text

    texts = [code_text(part) for part in training_code()]
    assert all(t.startswith(("FunctionDef(", "ClassDef(", "Module(")) for t in texts), texts
    first = (train.__doc__ or "").strip().splitlines()[0]
    assert first and first not in code_text(train)  # its docstring is left out
    assert "lineno" not in code_text(train)
    tree = ast.parse(code_text(train).join(["x = ", ""]))  # it is a Python expression: ast.dump
    assert isinstance(tree.body[0], ast.Assign)
