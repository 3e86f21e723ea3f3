"""Real servers for the tests, started on loopback by session fixtures (SERVICES.md).

Each module starts one kind of server and exposes a session fixture; ``tests/conftest.py``
imports them. A missing program is a failure with an install hint, never a skip: the
servers are part of what the suite checks (``.ci/run`` installs them).
"""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A free TCP port below the ephemeral range (SERVICES.md: ports < 32768)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found between 20000 and 32000")


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
