"""A small threaded TCP proxy on loopback that tests can tell to misbehave.

There is no ``tc netem`` here (SERVICES.md): the tests put this proxy between a client and
a real server, then cut every connection now, cut once N more bytes went through, or stall
(stop forwarding without closing, like a dead link) and resume.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType

from tests.servers import free_port

_POLL = 0.05


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``, one thread per direction."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self._server = socket.create_server((host, self.port))
        self._server.settimeout(_POLL)
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        # set while forwarding in that direction (cleared: stalled)
        self._running = {"up": threading.Event(), "down": threading.Event()}
        for event in self._running.values():
            event.set()
        self._closing = threading.Event()
        self._cut_budget: int | None = None  # bytes left before every connection is cut
        self._cut_direction = "down"
        #: bytes forwarded from the server to clients / from clients to the server
        self.bytes_down = 0
        self.bytes_up = 0
        self.accepted = 0
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept",
                                          daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what the tests say ------------------------------------------------------------------
    def cut(self) -> None:
        """Reset every open connection now (new ones are still accepted)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for a, b in conns:
            _reset(a)
            _reset(b)

    def cut_after(self, n_bytes: int, direction: str = "down") -> None:
        """Cut every connection once ``n_bytes`` more went ``down`` (server to client),
        ``up`` or either way; later connections are left alone."""
        self._directions(direction)
        with self._lock:
            self._cut_budget, self._cut_direction = n_bytes, direction

    def stall(self, direction: str = "both") -> None:
        """Stop forwarding ``down`` (server to client), ``up`` or both ways; connections
        stay open and silent, like a dead link."""
        for d in self._directions(direction):
            self._running[d].clear()

    def resume(self) -> None:
        for event in self._running.values():
            event.set()

    @staticmethod
    def _directions(direction: str) -> tuple[str, ...]:
        if direction not in ("down", "up", "both"):
            raise ValueError(f"direction must be down, up or both, not {direction!r}")
        return ("down", "up") if direction == "both" else (direction,)

    def close(self) -> None:
        self._closing.set()
        self.resume()
        self.cut()
        self._server.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)

    # -- the plumbing ---------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                _reset(client)  # the server is down: the client sees a reset
                continue
            with self._lock:
                self._conns.append((client, upstream))
                self.accepted += 1
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                t = threading.Thread(target=self._pump, args=(src, dst, direction),
                                     name=f"proxy-{direction}", daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while not self._closing.is_set():
                if not self._running[direction].wait(_POLL):
                    continue  # stalled: leave the bytes in the kernel's buffers
                readable, _, _ = select.select([src], [], [], _POLL)
                if not readable or not self._running[direction].is_set():
                    continue  # (stalled while waiting: the bytes stay unread)
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                data, cut_now = self._take_budget(data, direction)
                if data:
                    dst.sendall(data)
                if cut_now:
                    self.cut()
                    return
        except (OSError, ValueError):
            pass  # cut (a closed socket has no descriptor), or the other side went away
        finally:
            self._drop(src, dst)

    def _take_budget(self, data: bytes, direction: str) -> tuple[bytes, bool]:
        with self._lock:
            if direction == "down":
                self.bytes_down += len(data)
            else:
                self.bytes_up += len(data)
            budget = self._cut_budget
            if budget is None or self._cut_direction not in (direction, "both"):
                return data, False
            if len(data) < budget:
                self._cut_budget = budget - len(data)
                return data, False
            self._cut_budget = None
            return data[:budget], True

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            pair = next((p for p in self._conns if a in p and b in p), None)
            if pair is not None:
                self._conns.remove(pair)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a broken link or a crashed peer would."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
