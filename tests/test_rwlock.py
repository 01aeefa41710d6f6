"""The swap lock: statements (readers) share it, a writer excludes them, and a patient writer
lets arriving statements in while it waits for a gap, for at most its patience."""

from __future__ import annotations

import threading
import time

import pytest

from tierflight.core.rwlock import RWLock


def _hold_read(lock: RWLock, seconds: float, started: threading.Event) -> threading.Thread:
    def run() -> None:
        with lock.read():
            started.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _reader_waits(lock: RWLock) -> float:
    began = time.monotonic()
    with lock.read():
        return time.monotonic() - began


def _start_writer(lock: RWLock, patience: float, entered: threading.Event) -> threading.Thread:
    def run() -> None:
        with lock.write(patience=patience):
            entered.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_impatient_writer_holds_arriving_readers_back() -> None:
    lock, started, entered = RWLock(), threading.Event(), threading.Event()
    reader = _hold_read(lock, 0.3, started)
    started.wait()
    writer = _start_writer(lock, 0.0, entered)
    time.sleep(0.05)  # the writer is waiting for the running statement
    assert _reader_waits(lock) > 0.15  # queued behind the writer
    assert entered.is_set()
    reader.join()
    writer.join()


def test_patient_writer_lets_arriving_readers_in_then_takes_its_turn() -> None:
    lock, started, entered = RWLock(), threading.Event(), threading.Event()
    reader = _hold_read(lock, 0.3, started)
    started.wait()
    writer = _start_writer(lock, 1.0, entered)
    time.sleep(0.05)
    assert _reader_waits(lock) < 0.05  # not held back while the writer is patient
    assert not entered.is_set()
    reader.join()
    writer.join(timeout=2)
    assert entered.is_set()  # the gap after the last statement lets it in


def test_patience_runs_out() -> None:
    # Overlapping statements never leave a gap: once its patience is over the writer takes
    # its turn anyway, long before the statements stop coming.
    lock, entered, stop = RWLock(), threading.Event(), threading.Event()
    readers: list[threading.Thread] = []

    def arrivals() -> None:
        while not stop.is_set():
            started = threading.Event()
            readers.append(_hold_read(lock, 0.2, started))
            time.sleep(0.05)

    source = threading.Thread(target=arrivals)
    source.start()
    time.sleep(0.3)
    writer = _start_writer(lock, 0.1, entered)
    assert entered.wait(timeout=1.0)
    stop.set()
    source.join()
    writer.join()
    for r in readers:
        r.join()


def test_the_last_reader_out_wakes_a_patient_writer_at_once() -> None:
    # A writer with a long patience still enters as soon as the last statement ends: the
    # reader leaving wakes it (it does not sleep out its patience).
    lock, started, entered = RWLock(), threading.Event(), threading.Event()
    reader = _hold_read(lock, 0.2, started)
    started.wait()
    writer = _start_writer(lock, 30.0, entered)
    reader.join()
    assert entered.wait(timeout=2.0)
    writer.join()
    assert _reader_waits(lock) < 0.5  # and the lock is free again afterwards


def test_slots_are_taken_without_waiting_and_given_back_once() -> None:
    from tierflight.core.threads import Slots

    slots = Slots(2)
    assert slots.take() and slots.take()
    assert not slots.take()  # none free: refused at once, not waited for
    slots.give()
    assert slots.free == 1 and slots.take()
    slots.give()
    slots.give()
    assert slots.free == 2
    with pytest.raises(ValueError, match="never taken"):
        slots.give()
    # Many threads taking and giving back concurrently never lose or make a slot.
    def churn() -> None:
        for _ in range(2000):
            if slots.take():
                slots.give()

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slots.free == 2
