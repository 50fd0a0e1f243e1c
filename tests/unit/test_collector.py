"""The collector schedule: the settled daemon's objects leave the collector's full passes,
and cyclic garbage among them is still freed at the next refreeze."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from vdsm_py.service.collector import CollectorSchedule


class Node:
    """A cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()  # the collector is process-wide: leave it as each test found it
    yield
    gc.unfreeze()


def frozen_cycle(schedule: CollectorSchedule) -> weakref.ref[Node]:
    node = Node()
    ref = weakref.ref(node)
    schedule.settle()
    del node
    return ref


def test_settled_objects_are_frozen_and_new_ones_are_not():
    schedule = CollectorSchedule(600)
    kept = Node()
    schedule.settle()
    assert gc.get_freeze_count() > 0
    # the collector's generations no longer hold it (the permanent one does)
    assert not any(kept is o for o in gc.get_objects())
    later = Node()
    assert any(later is o for o in gc.get_objects(generation=0))


def test_a_full_pass_leaves_frozen_garbage_and_a_refreeze_frees_it():
    schedule = CollectorSchedule(600)
    ref = frozen_cycle(schedule)
    gc.collect()
    assert ref() is not None  # frozen: the full pass did not look at it
    assert schedule.refreeze() >= 1
    assert ref() is None
    assert gc.get_freeze_count() > 0  # and what lives on is frozen again


def test_an_interval_of_zero_leaves_the_collector_alone():
    schedule = CollectorSchedule(0)
    node = Node()
    ref = weakref.ref(node)
    schedule.settle()
    assert gc.get_freeze_count() == 0
    del node
    gc.collect()
    assert ref() is None


async def test_the_schedule_refreezes_every_interval_until_stopped():
    schedule = CollectorSchedule(0.05)
    node = Node()
    ref = weakref.ref(node)
    schedule.start()  # settles: the cycle is frozen
    del node
    try:
        for _ in range(100):
            if ref() is None:
                break
            await asyncio.sleep(0.05)
        assert ref() is None  # a refreeze freed it
    finally:
        schedule.stop()
    assert gc.get_freeze_count() == 0  # stopping gives everything back to the collector
