"""The stand-in serves while a batch runs long, and hands the loop back when it ends."""

import threading

from polling import eventually

from model_container.standin import StandIn

WAIT_S = 10.0


def test_it_stands_in_for_a_long_batch_until_it_ends() -> None:
    served = threading.Event()
    wakes: list[int] = []
    rounds = 0

    def stand_in(done: object) -> None:
        nonlocal rounds
        assert callable(done)
        served.set()
        while not done():  # the serving loop would poll; the wake makes it return
            rounds += 1
            served.wait(0.001)

    standin = StandIn(stand_in, lambda: wakes.append(1))
    standin.tick_s = 0.01
    standin.lock.acquire()
    standin.start()
    try:
        with standin.lent():  # a batch that lasts until the stand-in served
            assert served.wait(WAIT_S), "the stand-in never took over"
            assert standin.lock.locked()  # held by the stand-in now
        # The batch is over: the lock is back with this thread, the stand-in was told.
        assert standin.lock.locked() and standin.batch_over
        assert rounds >= 1
    finally:
        standin.close()
    eventually(lambda: not standin.alive, "the stand-in ends", WAIT_S)
