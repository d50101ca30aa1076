"""A lazy image split's items are read on one intra-op thread (small per-image tensor ops with
torch's threads cost 20-100 ms an image on a busy 2-core machine: the dress rehearsal's
Places365 / LSUN / DTD reads), and the thread count is restored after, also on an error."""

import pytest
import torch

from oebench.bench.matrix import Ref
from oebench.errors import PluginFailed
from oebench.execute.sources import CheckedItems


class Recording:
    """A lazy split that notes the intra-op thread count each item is read with."""

    def __init__(self, fail_at: int | None = None):
        self.threads: list[int] = []
        self.fail_at = fail_at

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        self.threads.append(torch.get_num_threads())
        if index == self.fail_at:
            raise OSError("truncated file")
        return torch.full((3, 4, 4), 0.5), -1


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_items_are_read_on_one_thread_and_the_count_restored(two_threads):
    data = Recording()
    items = CheckedItems(data, ("dataset", Ref("lsun"), "test"), 3, None)
    batch = items.__getitems__([0, 1, 2])
    assert len(batch) == 3 and float(batch[0][0].mean()) == 0.5
    assert data.threads == [1, 1, 1]
    assert torch.get_num_threads() == 2
    assert items[3][1] == -1 and data.threads[-1] == 1 and torch.get_num_threads() == 2


def test_thread_count_restored_when_a_read_fails(two_threads):
    items = CheckedItems(Recording(fail_at=1), ("dataset", Ref("lsun"), "test"), 3, None)
    with pytest.raises(PluginFailed, match="truncated file"):
        items.__getitems__([0, 1])
    assert torch.get_num_threads() == 2
