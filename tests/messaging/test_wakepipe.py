import select

from messaging.wakepipe import WakePipe


def readable(pipe: WakePipe) -> bool:
    ready, _, _ = select.select([pipe.fd], [], [], 0)
    return bool(ready)


def test_wake_makes_the_pipe_readable_and_drain_empties_it() -> None:
    pipe = WakePipe()
    try:
        assert not readable(pipe)
        pipe.wake()
        pipe.wake()
        assert readable(pipe)
        pipe.drain()
        assert not readable(pipe)
        pipe.drain()  # nothing pending: returns at once
    finally:
        pipe.close()


def test_waking_a_full_pipe_neither_blocks_nor_raises() -> None:
    pipe = WakePipe()
    try:
        for _ in range(100_000):  # more bytes than a pipe holds (64 KiB on Linux)
            pipe.wake()
        pipe.drain()
        assert not readable(pipe)
    finally:
        pipe.close()

