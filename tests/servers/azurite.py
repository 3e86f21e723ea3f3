"""Azurite (the Azure Blob emulator) for the tests, behind a small listing proxy.

``azurite_server`` starts ``azurite-blob`` on loopback with its data in a temporary folder.
Clients talk to it through :class:`StartFromProxy`, an HTTP pass-through on its own port:

Azurite 3.35 (the last release that runs on Node 20) ignores the ``startFrom`` parameter
of List Blobs, which Azure itself honours and deltalake 1.6.6 (object_store 0.13) uses to
list ``_delta_log/`` from the snapshot's version on. Azurite hands back the whole log
instead, and every write to a table that already has two versions fails with
"Invalid table version: 1" (delta-rs issue 3716; Azurite adds startFrom in 3.36, which
needs Node 21+). The proxy drops the listed blobs that sort before ``startFrom``, as
Azure does, and changes nothing else: requests are forwarded byte for byte, so shared-key
signatures still match.

``stop()`` ends the proxy (its listener and open connections go with it) and Azurite;
``start()`` brings both back on the same ports with the same data folder: an outage as
clients see it.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, wait_for_port

__all__ = ["azurite_server"]

ACCOUNT = "devstoreaccount1"
#: Azurite's documented, public development key (not a secret).
KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
       "K1SZFPTOtr/KBHBeksoGMGw==")
ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = ("azurite-blob is not installed: run .ci/run, or "
                "`npm install -g azurite@3.35.0` (3.36+ needs Node 21+)")

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
               "transfer-encoding", "upgrade", "content-length"}
_BLOB = re.compile(rb"<Blob>.*?</Blob>", re.S)
_NAME = re.compile(rb"<Name>(.*?)</Name>", re.S)


def drop_before(listing: bytes, start_from: str) -> bytes:
    """A List Blobs response without the blobs whose names sort before ``start_from``."""

    def keep(m: re.Match[bytes]) -> bytes:
        name = _NAME.search(m.group(0))
        if name is None:
            return m.group(0)
        # Azure compares names as UTF-8 bytes, inclusive of start_from itself.
        text = html.unescape(name.group(1).decode("utf-8"))
        return m.group(0) if text.encode() >= start_from.encode() else b""

    return _BLOB.sub(keep, listing)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object_store expects
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True
    server: _ProxyServer
    _upstream: http.client.HTTPConnection | None = None  # this client's own to Azurite

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.headers.get("Content-Length") is not None:
            headers["Content-Length"] = str(len(body))
        try:
            resp, data = self._upstream_call(body, headers)
        except OSError:
            # Azurite is down: drop the client's connection, as a dead server would.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if (self.command == "GET" and resp.status == 200 and query.get("comp") == ["list"]
                and "startFrom" in query):
            data = drop_before(data, query["startFrom"][0])
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _upstream_call(self, body: bytes, headers: dict[str, str]
                       ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request to Azurite on this client's own keep-alive connection."""
        conn = self._upstream
        fresh = conn is None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port,
                                              timeout=120)
            self._upstream = conn
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp, resp.read()
        except OSError:
            conn.close()
            self._upstream = None
            if fresh:
                raise
            # Azurite closed the idle connection before reading the request: send it again.
            return self._upstream_call(body, headers)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        super().__init__(("127.0.0.1", port), _Handler)


class StartFromProxy:
    """The pass-through in front of Azurite (see the module docstring), in its own process.

    Not a thread of the test process: some deltalake calls (its filesystem handler's
    listing) hold the GIL while they wait for the server, and would wait forever for a
    proxy that needs the GIL to answer.
    """

    def __init__(self, port: int, upstream_port: int, log: Path) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.servers.azurite", str(self.port),
                 str(self.upstream_port)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        """End the process: the kernel closes its listener and every open connection."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


@dataclass
class AzuriteServer:
    """A running Azurite; ``endpoint`` is the proxied blob endpoint clients use."""

    location: Path
    port: int = field(default_factory=free_port)
    blob_port: int = field(default_factory=free_port)
    account: str = ACCOUNT
    key: str = KEY
    _proc: subprocess.Popen[bytes] | None = None
    _proxy: StartFromProxy | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def storage_options(self, **extra: str) -> dict[str, str]:
        """deltalake options for this account; ``extra`` adds or overrides options.

        With a custom endpoint, deltalake 1.6.6 needs the account name, its key and
        ``azure_storage_endpoint`` including the account path, plus ``azure_allow_http``.
        (``azure_storage_use_emulator`` always means port 10000.)
        """
        return {"azure_storage_account_name": self.account,
                "azure_storage_account_key": self.key,
                "azure_storage_endpoint": self.endpoint,
                "azure_allow_http": "true", **extra}

    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};"
                f"AccountKey={self.key};BlobEndpoint={self.endpoint};")

    def service_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string())

    def create_container(self, name: str) -> str:
        self.service_client().create_container(name)
        return name

    def new_container(self, prefix: str = "t") -> str:
        """A fresh container (names: 3-63 lowercase letters, digits and hyphens)."""
        return self.create_container(f"{prefix}-{uuid.uuid4().hex[:16]}")

    def blob_names(self, container: str, prefix: str = "") -> list[str]:
        client = self.service_client().get_container_client(container)
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None))

    def read_blob(self, container: str, name: str) -> bytes:
        client = self.service_client().get_blob_client(container, name)
        data: bytes = client.download_blob().readall()
        return data

    def start(self) -> None:
        exe = shutil.which("azurite-blob")
        if exe is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.location.mkdir(parents=True, exist_ok=True)
        log = open(self.location / "azurite.log", "ab")  # noqa: SIM115 - the child keeps it
        self._proc = subprocess.Popen(
            [exe, "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
             "--location", str(self.location / "data"), "--skipApiVersionCheck", "--loose",
             "--disableTelemetry"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for_port(self.blob_port, timeout=60)
        except TimeoutError:
            self.stop()
            tail = (self.location / "azurite.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"azurite-blob did not start on port {self.blob_port}:\n{tail}",
                        pytrace=False)
        self._proxy = StartFromProxy(self.port, self.blob_port, self.location / "proxy.log")
        self._proxy.start()

    def stop(self) -> None:
        """Take the blob endpoint away (the data folder stays for ``start()``)."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._proc is not None:
            if self._proc.poll() is None:
                # SIGINT: Azurite's own clean shutdown, which saves its metadata database.
                self._proc.send_signal(signal.SIGINT)
                try:
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None


def main(argv: list[str]) -> None:
    """``python -m tests.servers.azurite PORT UPSTREAM_PORT``: run the proxy."""
    port, upstream = int(argv[0]), int(argv[1])
    _ProxyServer(port, upstream).serve_forever()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite on loopback for the whole session; use one container per test."""
    server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
