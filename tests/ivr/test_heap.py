"""freeze_startup_heap: what exists is frozen out of full collections; new garbage still goes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ivr.heap import freeze_startup_heap


class Node:
    """A cycle member: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_start_up_objects_are_frozen_and_later_cycles_are_still_collected(
    unfrozen: None,
) -> None:
    kept = Node()
    kept.other = kept  # alive: referenced from here
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > 1000
    assert not any(obj is kept for obj in gc.get_objects())  # out of every generation

    later = Node()
    later.other = later
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None  # a cycle made after the freeze is collected as before
    assert kept.other is kept
