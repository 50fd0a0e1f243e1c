import asyncio
import threading

from vdsm_py.events import EventBus


async def test_events_published_from_threads_arrive_on_the_loop_in_order():
    bus = EventBus(asyncio.get_running_loop())
    got: list[tuple[str, int, bool]] = []
    loop_thread = threading.get_ident()
    bus.subscribe(lambda e: got.append((e.method, e.params["n"], threading.get_ident() == loop_thread)))

    def publisher():
        for n in range(50):
            bus.publish("|virt|VM_status|x", {"n": n})

    t = threading.Thread(target=publisher)
    t.start()
    t.join()
    await asyncio.sleep(0.05)
    assert [n for _, n, _ in got] == list(range(50))
    assert all(on_loop for _, _, on_loop in got)


async def test_notify_time_is_added_and_unsubscribe_stops_delivery():
    bus = EventBus(asyncio.get_running_loop())
    got = []
    unsubscribe = bus.subscribe(got.append)
    bus.publish("a", {})
    unsubscribe()
    bus.publish("b", {})
    await asyncio.sleep(0)
    assert [e.method for e in got] == ["a"]
    assert isinstance(got[0].params["notify_time"], int)


async def test_a_failing_subscriber_does_not_stop_the_others():
    bus = EventBus(asyncio.get_running_loop())
    got = []

    def broken(event):
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    bus.publish("a", {})
    assert [e.method for e in got] == ["a"]
