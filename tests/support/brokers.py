"""Real brokers for the tests, from Debian's packages: `nats-server -js` and `rabbitmq-server`,
each on free loopback ports with its data in a temp folder, killed by the pid they were
started with (a broker restarted on the same folder and ports keeps what it had stored)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.servers import free_port, request, stop_process, wait_until

if TYPE_CHECKING:
    from tests.support.nats_accounts import NatsAccounts

START_TIMEOUT_SECONDS = 60


def _kill_group(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class NatsServer:
    """nats-server with JetStream, its store in `folder`."""

    folder: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # With both, clients must sign in as this user.
    user: str | None = None
    password: str | None = None
    # Clients must show this token.
    token: str | None = None
    # (CA certificate, certificate, key): clients must speak TLS and trust the CA.
    tls: tuple[Path, Path, Path] | None = None
    # Operator mode: clients sign in as a user of these accounts, with a .creds file.
    accounts: NatsAccounts | None = None

    @property
    def creds(self) -> Path | None:
        """The accounts' user's .creds file (written at start): what the tests' own connection shows."""
        return None if self.accounts is None else self.folder / "tests.creds"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        configured = []
        if self.accounts is not None:
            (self.folder / "nats-server.conf").write_text(self.accounts.server_config())
            configured = ["-c", str(self.folder / "nats-server.conf")]
            self.accounts.write_creds(self.creds)
        with open(self.folder / "nats-server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    shutil.which("nats-server") or "/usr/sbin/nats-server",
                    *configured,
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-m",
                    str(self.monitor_port),
                    "-sd",
                    str(self.folder / "store"),
                    "-n",
                    "webhook-tests",
                    *(["--user", self.user, "--pass", self.password] if self.user else []),
                    *(["--auth", self.token] if self.token else []),
                    *(["--tls", "--tlscert", str(self.tls[1]), "--tlskey", str(self.tls[2])] if self.tls else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = wait_until(self._ready, timeout=START_TIMEOUT_SECONDS)
        if not ready:
            self.kill()
            raise RuntimeError("nats-server did not start: " + self.log()[-2000:])
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("nats-server exited: " + self.log()[-2000:])
        return request(self.monitor_port, "GET", "/healthz?js-enabled-only=true", timeout=2).status == 200

    def log(self) -> str:
        path = self.folder / "nats-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        _kill_group(self.process)

    def stop(self) -> None:
        stop_process(self.process, 10)

    def run(self, work):
        """Run `work(jetstream)` (a coroutine function) with a connection of its own."""
        import nats

        async def go():
            credentials = {"user": self.user, "password": self.password} if self.user else {}
            if self.token:
                credentials["token"] = self.token
            if self.creds:
                credentials["user_credentials"] = str(self.creds)
            if self.tls:
                credentials["tls"] = ssl.create_default_context(cafile=str(self.tls[0]))
            connection = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False, **credentials)
            try:
                return await work(connection.jetstream(timeout=10))
            finally:
                await connection.close()

        return asyncio.run(go())

    def add_stream(self, name: str, subjects: list[str], **config) -> None:
        self.run(lambda jetstream: jetstream.add_stream(name=name, subjects=subjects, **config))

    def stream_messages(self, name: str) -> list:
        """Every message of the stream, oldest first (headers and data)."""

        async def read(jetstream):
            info = await jetstream.stream_info(name)
            found = []
            if info.state.messages == 0:
                return found
            # No message is ever deleted from the tests' streams: every sequence is there.
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                found.append(await jetstream.get_msg(name, sequence))
            return found

        return self.run(read)


@dataclass
class RabbitServer:
    """rabbitmq-server as one node, its database and logs in `folder`, with its own epmd."""

    folder: Path
    port: int = field(default_factory=free_port)
    distribution_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    epmd: subprocess.Popen | None = None
    # (CA certificate, certificate, key): also an AMQPS listener on `tls_port`.
    tls: tuple[Path, Path, Path] | None = None
    tls_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        return f"amqps://127.0.0.1:{self.tls_port}/"

    def start(self) -> RabbitServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")
        config = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        if self.tls is not None:
            ca, certificate, key = self.tls
            config += (
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {certificate}\nssl_options.keyfile = {key}\n"
                "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
            )
        (self.folder / "rabbitmq.conf").write_text(config)
        if self.epmd is None:
            # Erlang's port mapper, started here so that no daemon outlives the test.
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": f"rabbit_{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.distribution_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
        }
        with open(self.folder / "rabbitmq-server.log", "ab") as log:
            self.process = subprocess.Popen(
                ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_until(self._ready, timeout=START_TIMEOUT_SECONDS):
            self.stop()
            raise RuntimeError("rabbitmq-server did not start: " + self.log()[-2000:])
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("rabbitmq-server exited: " + self.log()[-2000:])
        try:
            # The port first: the AMQP client logs an error for each refused connection.
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            self.run(lambda channel: asyncio.sleep(0))
        except Exception:  # noqa: BLE001 - not accepting AMQP yet
            return False
        return True

    def log(self) -> str:
        path = self.folder / "rabbitmq-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the node (its port mapper stays, for a restart)."""
        _kill_group(self.process)

    def stop(self) -> None:
        _kill_group(self.process)
        _kill_group(self.epmd)
        self.epmd = None

    def run(self, work):
        """Run `work(channel)` (a coroutine function) on a connection of its own, as guest."""
        import aio_pika

        async def go():
            connection = await aio_pika.connect(host="127.0.0.1", port=self.port, timeout=5)
            try:
                channel = await connection.channel()
                return await work(channel)
            finally:
                await connection.close()

        return asyncio.run(go())

    def declare_queue(self, name: str) -> None:
        """A durable queue, reached through the default exchange by its own name."""
        self.run(lambda channel: channel.declare_queue(name, durable=True))

    def queue_messages(self, name: str) -> list:
        """Take every message of the queue now (acknowledged, so they are gone)."""

        async def take(channel):
            queue = await channel.declare_queue(name, durable=True, passive=True)
            found = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    return found
                found.append(message)
            return found

        return self.run(take)
