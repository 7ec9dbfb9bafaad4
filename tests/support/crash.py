"""The crash tests' kill cycle: writers stream writes at a server until it is SIGKILLed."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable

from tests.support.server import Server

WRITERS = 4

# a writer, called with the keywords url, stop (an event) and seed: runs until the server
# dies or stop is set
Writer = Callable[..., None]


def kill_while_writing(server: Server, writer: Writer, cycle: int, rng: random.Random) -> None:
    """Start WRITERS writers, SIGKILL the server 0.3-1.5 s later, then stop them."""
    assert server.process is not None
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=writer, kwargs={"url": server.url, "stop": stop, "seed": cycle * 100 + i}
        )
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(0.3, 1.5))
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(30)
