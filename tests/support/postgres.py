"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, loopback only.

Run as an unprivileged user (PostgreSQL refuses to run as root): when the tests run as
root, the cluster belongs to the `postgres` account Debian's packages create (or `nobody`).
The default collation is ICU's en-US, as on many real servers, so that any ordering that
depends on the database's collation instead of the service's shows up in the tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.servers import free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "cluster-admin-password"
# The role the service connects as: no superuser, owner of the databases it uses.
APP_USER = "webhook"
APP_PASSWORD = "app-password-not-for-logs"
START_TIMEOUT_SECONDS = 60


def postgres_bindir() -> Path | None:
    """The folder of initdb and pg_ctl from Debian's packages (newest version), or on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _owner() -> pwd.struct_passwd | None:
    """The account the cluster runs as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL")


@dataclass
class PostgresCluster:
    """One PostgreSQL server on 127.0.0.1 with its data in a temporary folder."""

    bindir: Path
    port: int = field(default_factory=free_port)
    root: Path | None = None
    process_log: Path | None = None

    def init(self) -> PostgresCluster:
        self.root = Path(tempfile.mkdtemp(prefix="webhook-pg-"))
        owner = _owner()
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        password_file = self.root / "pw"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        if owner is not None:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--locale-provider=icu",
            "--icu-locale=en-US",
            "--no-sync",
        )
        password_file.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 400\n"
                "shared_buffers = 64MB\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "log_min_messages = warning\n"
            )
        return self

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> PostgresCluster:
        self.process_log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.process_log), "-w", "-t", "60", "start")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with self.admin() as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no shutdown checkpoint)."""
        if self.root is not None and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        """Stop the server at once and remove its folder. The removal runs on by itself: a
        run's cluster holds a database per test (gigabytes), and waiting for it took 25 s at
        the end of a run."""
        self.stop("immediate")
        if self.root is not None:
            # The shell starts the removal in the background and returns at once.
            subprocess.run(["sh", "-c", 'rm -rf -- "$0" >/dev/null 2>&1 &', str(self.root)], check=False)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=SUPERUSER_PASSWORD,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def setup_app_role(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")

    def create_database(self, template: str = "template0", owner: str = APP_USER) -> str:
        """A new empty (or copied from `template`) database owned by the service's role."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {owner} TEMPLATE {template}")
        return name

    def url(self, dbname: str, user: str = APP_USER, password: str = APP_PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        owner = _owner()
        if owner is not None:
            command = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups", *command]
        result = subprocess.run(
            command,
            check=False,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
