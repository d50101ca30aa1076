"""Unlabelled OOD sets from one folder of images: LSUN, iSUN, Icons-50, Chars74K."""

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
