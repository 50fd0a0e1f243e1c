import asyncio
import contextvars
import threading

import pytest

from vdsm_py.errors import CallTimeout, ResourceUnavailable
from vdsm_py.executor import Executor


@pytest.fixture
def executor():
    ex = Executor(workers=2, default_timeout=5.0, name="test")
    yield ex
    ex.close()


async def test_run_returns_result_from_a_worker_thread(executor):
    main = threading.get_ident()
    ident = await executor.run(threading.get_ident)
    assert ident != main


async def test_exception_reaches_the_caller(executor):
    def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await executor.run(boom)


async def test_hung_call_times_out_and_the_worker_is_replaced(executor):
    release = threading.Event()
    try:
        with pytest.raises(CallTimeout, match="hang did not finish within 0.2 s"):
            await executor.run(release.wait, timeout=0.2, name="hang")
        stats = executor.stats()
        assert stats["written_off"] == 1
        assert stats["workers"] == 2
        # The pool still serves two calls at once although one thread is stuck.
        barrier = threading.Barrier(2, timeout=5)
        await asyncio.gather(executor.run(barrier.wait), executor.run(barrier.wait))
    finally:
        release.set()
    for _ in range(100):
        if executor.stats()["written_off"] == 0:
            break
        await asyncio.sleep(0.01)
    assert executor.stats()["written_off"] == 0


async def test_written_off_threads_are_capped():
    ex = Executor(workers=1, default_timeout=5.0, max_written_off=1, name="cap")
    release = threading.Event()
    try:
        with pytest.raises(CallTimeout):
            await ex.run(release.wait, timeout=0.1)
        with pytest.raises(CallTimeout):
            await ex.run(release.wait, timeout=0.1)
        # The second stuck worker is not replaced: only one written off, no new threads.
        assert ex.stats()["written_off"] == 1
        assert ex.stats()["workers"] == 1
    finally:
        release.set()
        ex.close()


async def test_backlog_is_bounded():
    ex = Executor(workers=1, default_timeout=5.0, max_queued=2, name="bounded")
    release = threading.Event()
    try:
        first = asyncio.ensure_future(ex.run(release.wait))
        second = asyncio.ensure_future(ex.run(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceUnavailable):
            await ex.run(release.wait)
        release.set()
        assert await first is True and await second is True
    finally:
        release.set()
        ex.close()


async def test_context_variables_travel_with_the_call(executor):
    var = contextvars.ContextVar("flow")
    var.set("flow-42")
    assert await executor.run(var.get) == "flow-42"


async def test_closed_executor_refuses_work(executor):
    executor.close()
    with pytest.raises(ResourceUnavailable):
        await executor.run(lambda: 1)


async def test_cancelling_the_caller_is_not_swallowed(executor):
    release = threading.Event()
    try:
        call = asyncio.ensure_future(executor.run(release.wait, timeout=30))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 5)
    finally:
        release.set()
