"""An S3 server for the tests: moto's server mode, with IAM checks on, behind a front door.

``s3_server`` starts ``moto_server`` (from the venv's bin) on loopback. moto accepts any
credentials by default, so a wrong key could never be tested: the fixture creates an IAM
user with an access key and an allow-all policy, then turns moto's request
authentication on (``/moto-api/reset-auth``). From then on only that key pair works,
and a wrong secret gets a real ``403 SignatureDoesNotMatch``.

moto keeps buckets in memory, so killing it would also lose the data. ``stop()`` and
``start()`` therefore kill and restart a small TCP forwarder (:class:`FrontDoor`) on
the port that clients use: to a client the endpoint refuses connections and then comes
back with its data, like an S3 endpoint after an outage.

deltalake 1.6.6 commits to S3 with a conditional put (``If-None-Match: *``), which moto
5.2 honours: no locking provider and no ``AWS_S3_ALLOW_UNSAFE_RENAME`` are needed (the
latter would turn the safety off), and ``aws_conditional_put`` is not needed either.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from tests.servers import free_port, wait_for_port

__all__ = ["s3_server"]

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
INSTALL_HINT = ("moto_server is not in the venv: run `make install` (dev extra "
                "moto[s3,server], flask, flask-cors) or .ci/run")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def forward(port: int, upstream_port: int) -> None:
    """Accept on ``port`` and pipe each connection to ``upstream_port``, until killed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            client.close()
            continue
        for s in (client, upstream):  # pass each chunk on at once (no Nagle delay)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


class FrontDoor:
    """A TCP forwarder process on ``port``; ``stop()`` kills it, cutting every connection.

    A process, not a thread of the tests: some deltalake calls hold the GIL while they
    wait for the server, and would wait forever for a forwarder that needs the GIL.
    """

    def __init__(self, port: int, upstream_port: int, log: Path) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.servers.moto_s3", str(self.port),
                 str(self.upstream_port)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


@dataclass
class MotoS3Server:
    """A running moto S3 with one valid key pair; ``endpoint`` is the front door."""

    workdir: Path
    port: int = field(default_factory=free_port)
    moto_port: int = field(default_factory=free_port)
    region: str = REGION
    access_key: str = ""
    secret_key: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _door: FrontDoor | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, **extra: str) -> dict[str, str]:
        """deltalake options; ``extra`` adds or overrides options."""
        return {"aws_endpoint_url": self.endpoint, "aws_region": self.region,
                "aws_access_key_id": self.access_key,
                "aws_secret_access_key": self.secret_key,
                "aws_allow_http": "true", **extra}

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def new_bucket(self, prefix: str = "t") -> str:
        """A fresh bucket (names: 3-63 lowercase letters, digits and hyphens)."""
        return self.create_bucket(f"{prefix}-{uuid.uuid4().hex[:16]}")

    def object_names(self, bucket: str, prefix: str = "") -> list[str]:
        names: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            names += [o["Key"] for o in page.get("Contents", [])]
        return sorted(names)

    def read_object(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def launch(self) -> None:
        exe = Path(sys.executable).parent / "moto_server"
        if not exe.exists():
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "moto.log", "ab")  # noqa: SIM115 - the child keeps it
        self._proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                      stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for_port(self.moto_port, timeout=60)
        except TimeoutError:
            self.shutdown()
            tail = (self.workdir / "moto.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"moto_server did not start on port {self.moto_port}:\n{tail}",
                        pytrace=False)
        self._enable_auth()
        self.start()

    def _enable_auth(self) -> None:
        direct = f"http://127.0.0.1:{self.moto_port}"
        iam = boto3.client("iam", endpoint_url=direct, region_name=self.region,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="silta")
        iam.put_user_policy(UserName="silta", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="silta")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        # 0 unauthenticated requests from now on: every request must carry a valid signature.
        req = urllib.request.Request(f"{direct}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def start(self) -> None:
        """Open the endpoint (again)."""
        self._door = FrontDoor(self.port, self.moto_port, self.workdir / "door.log")
        self._door.start()

    def stop(self) -> None:
        """Take the endpoint away: connections are refused until ``start()``."""
        if self._door is not None:
            self._door.stop()
            self._door = None

    def shutdown(self) -> None:
        self.stop()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """moto S3 on loopback for the whole session; use one bucket per test."""
    server = MotoS3Server(tmp_path_factory.mktemp("moto"))
    server.launch()
    try:
        yield server
    finally:
        server.shutdown()


if __name__ == "__main__":
    forward(int(sys.argv[1]), int(sys.argv[2]))
