"""Unlabelled OOD sets from one folder of images: any folder, LSUN, iSUN, Icons-50, Chars74K."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from oebench.api import DataNotFoundError, ImageSource, find_dir, present
from oebench_plugins.vision_datasets import ImageFiles, _size, check_split, folder_images, subset


class ImageFolderSet(ImageSource):
    """An unlabelled OOD set: every image file under one folder (any depth), sorted."""

    splits = ("test",)
    title = "images"
    folders: tuple[str, ...] = ()
    how = ""

    def __init__(
        self,
        root: str | None = None,
        folder: str | None = None,
        size: int = 32,
        n: Annotated[int, Ge(1)] | None = None,
    ):
        self.root, self.folder, self.size, self.n = root, folder, size, n
        self.shape = (3, size, size)

    def _locate(self) -> Path:
        """The ``folder`` option, else the first of ``folders`` found in the search directories."""
        if self.folder:
            return Path(self.folder).expanduser()
        base = find_dir(self.title, [self.folders], root=self.root, how=self.how)
        return present(base, self.folders)

    def files(self) -> list[Path]:
        """Every image file under the folder (any depth), sorted."""
        return folder_images(self.title, self._locate())

    def load(self, split, *, shape=None, seed=0):
        check_split(self, self.title, split)
        images = folder_images(self.title, self._locate())
        return ImageFiles(subset(images, self.n), None, *_size(self, shape))


class Images(ImageFolderSet):
    """Any folder of images as an unlabelled OOD set (OpenOOD's SSB-hard, NINCO, iNaturalist,
    OpenImage-O...): every image file under ``folder`` (any depth), sorted, resized (shorter
    side) and centre-cropped to the ID shape (else ``size``); ``n`` keeps a seeded random subset.
    ``folder`` is an absolute path, or a name looked up in the ``root`` option, then the data
    root (``--data-root``, ``$OEBENCH_DATA_ROOT``), then the system locations."""

    title = "images"

    def __init__(
        self,
        folder: str,
        root: str | None = None,
        size: int = 224,
        n: Annotated[int, Ge(1)] | None = None,
    ):
        super().__init__(root=root, folder=folder, size=size, n=n)

    def _locate(self) -> Path:
        """``folder`` as given when absolute, else the first search directory holding it."""
        path = Path(self.folder).expanduser()
        if path.is_absolute():
            if not path.is_dir():
                raise DataNotFoundError(f"images: folder {path} not found (no such folder)")
            return path
        base = find_dir(
            f"images {self.folder!r}",
            [self.folder],
            root=self.root,
            how="Put the image files (any depth) into {target}/" + self.folder,
        )
        return base / self.folder


class Lsun(ImageFolderSet):
    """LSUN as an OOD set: a folder of LSUN images (resize + centre crop)."""

    title = "LSUN"
    folders = ("lsun", "LSUN")
    how = (
        "Export the LSUN test set's images from its lmdb (the LSUN project's tools), or use "
        "the LSUN folders linked from https://github.com/facebookresearch/odin, and put the "
        "image files into {target}/lsun"
    )


class Isun(ImageFolderSet):
    """iSUN as an OOD set: a folder of iSUN images."""

    title = "iSUN"
    folders = ("iSUN", "isun")
    how = (
        "Extract the iSUN archive linked from https://github.com/facebookresearch/odin into "
        "{target}"
    )


class Icons50(ImageFolderSet):
    """Icons-50 as an OOD set for SVHN: ``Icons-50/<class>/<image>``, without the ``numbers``
    class (digit icons are not OOD for SVHN), as the OE reference code does."""

    title = "Icons-50"
    folders = ("Icons-50", "icons-50")
    how = (
        "Download Icons-50 (github.com/hendrycks/robustness, ICONS-50) and extract it into "
        "{target}, so that {target}/Icons-50/<class>/ holds the images"
    )
    #: classes left out (first-level folder names)
    dropped = ("numbers",)

    def files(self) -> list[Path]:
        """Every image file of the kept classes, sorted."""
        base = self._locate()
        kept = [p for p in folder_images(self.title, base)
                if p.relative_to(base).parts[0] not in self.dropped]  # fmt: skip
        if not kept:
            raise DataNotFoundError(f"{self.title}: no images outside {self.dropped} in {base}")
        return kept

    def load(self, split, *, shape=None, seed=0):
        check_split(self, self.title, split)
        return ImageFiles(subset(self.files(), self.n), None, *_size(self, shape))


class Chars74K(ImageFolderSet):
    """Chars74K street letters as an OOD set for SVHN: every image under ``Chars74K/`` (the
    ``English/Img`` natural-image part: ``GoodImg/Bmp/SampleNNN/*.png``), resized and
    centre-cropped like the reference's ``ImageFolder``."""

    title = "Chars74K"
    folders = ("Chars74K", "chars74k", "English/Img")
    how = (
        "Download EnglishImg.tgz from the Chars74K project page and extract its English/Img "
        "folder into {target}/Chars74K"
    )
