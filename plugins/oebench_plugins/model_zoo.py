"""The model zoo: published checkpoints, pinned by checksum, usable as models by name.

Every entry is one registered model (``models = ["pytorch-ood/wrn-40-2/cifar10/oe"]``):
an architecture of ours (WRN-40-2, WRN-16-4, torchvision's ResNet-18 / ResNet-50), the
normalisation the weights were trained with, a URL, a sha256 (or the repository's git blob
id) and a citation; ``oebench list models`` and ``oebench show NAME`` list them. The weights
file is looked up in ``path``, then in ``<data root>/zoo/<entry file>``, ``<data root>/<the
URL's file name>`` and ``<cache>/zoo/<entry file>``; downloaded only with ``--download``
(into the cache: a temporary name, verified, renamed) and verified before every use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import DataNotFoundError, UserError, cache_dir, data_root, download_allowed
from oebench_plugins.zoo_entries import OE_AUTHORS, OE_REPO, PYTORCH_OOD

#: normalisations the entries were trained with: name -> (mean, std) on [0, 1] pixels
NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar": (
        tuple(x / 255 for x in (125.3, 123.0, 113.9)),
        tuple(x / 255 for x in (63.0, 62.1, 66.7)),
    ),
    "cifar10": ((0.4913, 0.4823, 0.4467), (0.247, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
#: the paper of each training method
CITATIONS = {
    "crossentropy": "Zagoruyko & Komodakis 2016",
    "baseline": "Hendrycks, Mazeika & Dietterich 2019",
    "oe": "Hendrycks, Mazeika & Dietterich 2019",
    "oe-tune": "Hendrycks, Mazeika & Dietterich 2019",
    "oe-scratch": "Hendrycks, Mazeika & Dietterich 2019",
    "energy": "Liu et al. 2020",
    "logitnorm": "Wei et al. 2022",
    "entropic": "Dhamija et al. 2018",
    "vos": "Du et al. 2022",
}
#: architecture -> how the network is made (an oebench model, or torchvision's by name)
ARCHES = {"wrn-40-2": "wrn-40-2", "wrn-16-4": "wrn-16-4", "resnet18": "torchvision",
          "resnet50": "torchvision"}  # fmt: skip


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint."""

    name: str
    arch: str
    num_classes: int
    norm: str
    method: str
    url: str
    sha256: str | None
    git_blob: str | None = None
    source: str = ""

    @property
    def file_name(self) -> str:
        """Its name in ``<data root>/zoo/`` and the cache: the entry's name, made flat."""
        return self.name.replace("/", "--") + Path(self.url).suffix

    @property
    def citation(self) -> str:
        return CITATIONS.get(self.method, "")

    def pin(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        return f"git blob {self.git_blob}" if self.git_blob else "no published checksum"


def _entries() -> dict[str, ZooEntry]:
    """Every entry by name: pytorch-ood's registry, then the OE authors' repository."""
    found = [
        ZooEntry(f"pytorch-ood/{key}", arch, n, norm, method, url, sha, source="pytorch-ood 0.4")
        for key, arch, n, norm, method, url, sha in PYTORCH_OOD
    ]
    found += [
        ZooEntry(f"oe-authors/{name}", arch, n, norm, method, f"{OE_REPO}/{path}", sha, blob,
                 source="the OE authors")
        for name, arch, n, norm, method, path, sha, blob in OE_AUTHORS
    ]  # fmt: skip
    return {e.name: e for e in found}


ZOO = _entries()


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    sha, blob = hashlib.sha256(), hashlib.sha1()
    blob.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            blob.update(chunk)
    return sha.hexdigest(), blob.hexdigest()


def verify(entry: ZooEntry, path: Path, sha256: str | None, given: bool = False) -> None:
    """A one-line UserError unless ``path`` holds the entry's published bytes (and, when
    given, the user's ``sha256``); an entry without a published checksum needs ``sha256``."""
    got, blob = file_digests(path)
    fix = f"give the file from {entry.url}" if given else "delete it; --download fetches it again"
    if entry.sha256 and got != entry.sha256:
        raise UserError(
            f"model zoo entry {entry.name!r}: {path} has sha256 {got}, not the published "
            f"{entry.sha256}: a damaged or other file; {fix}"
        )
    if not entry.sha256 and entry.git_blob and blob != entry.git_blob:
        raise UserError(
            f"model zoo entry {entry.name!r}: {path} has git blob id {blob}, not the "
            f"published {entry.git_blob}: a damaged or other file; {fix}"
        )
    if sha256 is not None and got != sha256.lower():
        raise UserError(
            f"model zoo entry {entry.name!r}: {path} has sha256 {got}, not the sha256 option's "
            f"{sha256}"
        )
    if sha256 is None and not entry.sha256 and not entry.git_blob:
        raise UserError(
            f"model zoo entry {entry.name!r} has no published checksum: check {path} and pin "
            f"it with the option sha256 = {got!r}"
        )


def weights_file(entry: ZooEntry, path: str | None = None, sha256: str | None = None) -> Path:
    """The entry's weights file, found locally (or downloaded when allowed) and verified."""
    if path is not None:
        given = Path(path).expanduser()
        for candidate in (given, data_root() / given):
            if candidate.is_file():
                verify(entry, candidate, sha256, given=True)
                return candidate
        raise DataNotFoundError(
            f"model zoo entry {entry.name!r}: no file {given} (nor under the data root "
            f"{data_root()})"
        )
    cached = cache_dir() / "zoo" / entry.file_name
    places = [data_root() / "zoo" / entry.file_name, data_root() / Path(entry.url).name, cached]
    for candidate in places:
        if candidate.is_file():
            verify(entry, candidate, sha256)
            return candidate
    if not download_allowed():
        raise DataNotFoundError(
            f"model zoo entry {entry.name!r}: weights not found; put {entry.url} "
            f"({entry.pin()}) at {places[0]} (or {places[1]}), or run with --download to "
            f"fetch it into {cached}"
        )
    return _download(entry, cached, sha256)


def _download(entry: ZooEntry, dest: Path, sha256: str | None) -> Path:
    """Fetch the entry to a temporary name beside ``dest``, verify it, then rename it."""
    import contextlib
    import io
    import os

    part = dest.with_name(f".{dest.stem}.{os.getpid()}.unverified{dest.suffix}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    pin = entry.sha256 or sha256
    try:
        quiet = contextlib.redirect_stderr(io.StringIO()) if pin is None else None
        with quiet or contextlib.nullcontext():  # a git blob pin: verified here, not by fetch
            oebench.fetch(entry.url, part, sha256=pin)
        verify(entry, part, sha256)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def zoo_model(
    entry: ZooEntry, num_classes: int, shape: tuple, path: str | None, sha256: str | None
) -> Any:
    """The entry's network with its verified weights and its own normalisation."""
    from oebench_plugins.vision_models import load_weights, read_state_dict

    if num_classes != entry.num_classes:
        raise UserError(
            f"model zoo entry {entry.name!r} has {entry.num_classes} classes; the ID dataset "
            f"has {num_classes}"
        )
    file = weights_file(entry, path, sha256)
    if ARCHES[entry.arch] == "torchvision":
        net = oebench.create_model(
            "torchvision", num_classes, shape, arch=entry.arch, path=str(file)
        )
    else:
        net = oebench.create_model(entry.arch, num_classes, shape)
        load_weights(net, read_state_dict(file), strict=True, where=f"{file} ({entry.name})")
    net.input_normalization = NORMS[entry.norm]  # what the weights were trained with
    return net


def _pinned(entry: ZooEntry) -> str:
    if entry.sha256:
        return "sha256-pinned"
    return "git-blob-pinned" if entry.git_blob else "unpinned: give sha256"


def _factory(name: str) -> Any:
    """The registered factory of entry ``name`` (its options: ``path``, ``sha256``)."""
    entry = ZOO[name]

    def zoo(
        num_classes: int, shape: tuple[int, int, int], path: str | None = None,
        sha256: str | None = None,
    ) -> Any:  # fmt: skip
        return zoo_model(ZOO[name], num_classes, shape, path, sha256)

    zoo.__doc__ = (
        f"{entry.arch} for {entry.num_classes} classes ({entry.method}), from {entry.source}.\n\n"
        f"URL: {entry.url}\nPin: {entry.pin()}\nNormalisation (mean, std): "
        f"{NORMS[entry.norm]}\n\n``path`` names a local copy (else the data root's "
        f"zoo/{entry.file_name}, or the cache); ``sha256`` pins the file further (required "
        "for an entry without a published checksum)."
    )
    return zoo


@oebench.hookimpl
def register_models(register):
    for name, entry in ZOO.items():
        register(
            name,
            _factory(name),
            description=f"zoo: {entry.arch}, {entry.num_classes} classes, {entry.method} "
            f"({entry.source}; {_pinned(entry)})",
            citation=entry.citation,
        )
