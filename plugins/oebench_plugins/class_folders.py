"""Images in class sub-folders minus excluded classes (the OE paper's ImageNet-22K outliers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from oebench.api import DataNotFoundError, ImageSource, find_dir
from oebench_plugins.vision_datasets import (
    IMAGE_SUFFIXES,
    ImageFiles,
    _size,
    check_split,
    image_files,
    subset,
)


class ClassFolders(ImageSource):
    """Images in class sub-folders (ImageNet's layout, ``<folder>/<wnid>/*.JPEG``), minus the
    classes listed in ``exclude``: the OE paper's ImageNet-22K outliers without the ID classes.

    ``folder`` and every ``exclude`` entry are absolute paths, or names looked up in the data
    directories (the ``root`` option, then the data root); several ``exclude`` entries are
    separated by commas (from Python, also a list). An ``exclude`` entry is a text file
    of class ids (the first word of each line; ``#`` starts a comment), such as Tiny ImageNet's
    own ``tiny-imagenet-200/wnids.txt``, or a folder whose sub-folder names are the ids (such
    as an ImageNet-1K folder in class sub-folders). The images of a kept class may lie at any
    depth under its folder; they come back unlabelled, resized (shorter side) and centre-cropped
    to the ID shape (else ``size``). ``max_images`` keeps a seeded random subset.
    """

    splits = ("train", "test")

    def __init__(
        self,
        folder: str,
        exclude: str | list[str] | None = None,
        root: str | None = None,
        size: int = 64,
        max_images: Annotated[int, Ge(1)] | None = None,
    ):
        self.folder, self.root, self.size, self.max_images = folder, root, size, max_images
        entries = exclude.split(",") if isinstance(exclude, str) else list(exclude or [])
        self.exclude = [e.strip() for e in entries if e.strip()]
        self.shape = (3, size, size)

    def _find(self, name: str, what: str) -> Path:
        """``name`` as given when absolute, else the first search directory holding it."""
        if Path(name).expanduser().is_absolute():
            path = Path(name).expanduser()
            if not path.exists():
                raise DataNotFoundError(f"image-folder's {what} not found: no {path}")
            return path
        base = find_dir(f"image-folder's {what}", [name], root=self.root)
        return base / name

    def _lists(self) -> list[Path]:
        """The ``exclude`` entries that are files (folders list no file of their own)."""
        return [p for p in (self._find(e, "exclude list") for e in self.exclude) if p.is_file()]

    def excluded(self) -> set[str]:
        """The class ids named by every ``exclude`` entry."""
        ids: set[str] = set()
        for entry in self.exclude:
            path = self._find(entry, "exclude list")
            if path.is_dir():
                ids.update(d.name for d in path.iterdir() if d.is_dir())
                continue
            for line in path.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if words:
                    ids.add(words[0])
        return ids

    def classes(self) -> list[Path]:
        """The kept class folders, sorted by name."""
        top = self._find(self.folder, "folder")
        if not top.is_dir():
            raise DataNotFoundError(f"image-folder: {top} is not a folder")
        found = sorted(d for d in top.iterdir() if d.is_dir())
        if not found:
            raise DataNotFoundError(f"image-folder: no class sub-folders in {top}")
        dropped = self.excluded()
        kept = [d for d in found if d.name not in dropped]
        if not kept:
            raise DataNotFoundError(
                f"image-folder: every class folder of {top} is excluded ({len(found)} classes)"
            )
        return kept

    def images(self) -> list[Path]:
        """Every image file of the kept classes, sorted by class and path."""
        paths = [p for d in self.classes() for p in image_files(d)]
        if not paths:
            raise DataNotFoundError(
                f"image-folder: no image files ({', '.join(IMAGE_SUFFIXES)}) in the kept "
                f"classes of {self._find(self.folder, 'folder')}"
            )
        return paths

    def files(self) -> list[Path]:
        """The ``exclude`` lists and every image of the kept classes."""
        return sorted(self._lists() + self.images())

    def load(self, split, *, shape=None, seed=0):
        check_split(self, "image-folder", split)
        paths = subset(self.images(), self.max_images, seed)
        return ImageFiles(paths, None, *_size(self, shape))
