"""Test helper: a throw-away PostgreSQL cluster (Debian's `postgresql` binaries, initdb and
pg_ctl) in a temp folder, listening on a free port on 127.0.0.1 with password (SCRAM) auth,
its unix socket inside the folder.

Owns the cluster's folder and server process; `close()` always stops it (immediate mode,
then SIGKILL) and removes the folder. As root the server runs as the `postgres` user the
Debian package creates (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from tests.conftest import free_ports

HOST = "127.0.0.1"
USER = "meshems"
#: a throw-away cluster need not survive an OS crash: faster tests (the bench keeps fsync on)
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def pg_bin(name: str) -> str | None:
    """The newest /usr/lib/postgresql/<ver>/bin/NAME (Debian's layout), else NAME on PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def available() -> str:
    """'' when a cluster can be started here, else why not (for a skip reason)."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return "PostgreSQL's initdb/pg_ctl not found (scripts/setup installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return ""


class PgServer:
    """`with PgServer(settings=FAST) as pg:` ... `pg.url(db)`; `pg.new_database()` makes an
    empty database per test. The password is in `pg.password` (and `pg.password_file`)."""

    def __init__(self, settings: tuple[str, ...] = FAST, start_timeout_s: float = 30.0) -> None:
        self.settings, self.start_timeout_s = settings, start_timeout_s
        self.folder = Path(tempfile.mkdtemp(prefix="meshems-pg-"))
        self.data, self.sock, self.log = (
            self.folder / "data",
            self.folder / "sock",
            self.folder / "server.log",
        )
        self.port = free_ports(1)[0]
        self.password = secrets.token_hex(16)
        self.password_file = self.folder / "password"
        self._as: list[str] = []
        self.started = False

    def _run(self, *cmd: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *cmd], capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def start(self) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        assert initdb and pg_ctl, available()
        self.sock.mkdir()
        pw_for_initdb = self.folder / "initdb-pw"
        pw_for_initdb.write_text(self.password + "\n")
        self.password_file.write_text(self.password + "\n")
        os.chmod(self.password_file, 0o600)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chmod(self.folder, 0o755)  # the tests (root) read the password file and the log
            for p in (self.sock, pw_for_initdb):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
            self.data.mkdir(mode=0o700)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
            self.log.touch()
            os.chown(self.log, pw.pw_uid, pw.pw_gid)
        got = self._run(initdb, "-D", str(self.data), "-U", USER, f"--pwfile={pw_for_initdb}",
                        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--no-instructions", "--no-sync")  # fmt: skip
        pw_for_initdb.unlink()
        if got.returncode:
            raise RuntimeError(f"initdb failed ({got.returncode}): {got.stderr[-2000:]}")
        opts = " ".join([f"-c listen_addresses={HOST}", f"-p {self.port}", f"-k {self.sock}",
                         *(f"-c {s}" for s in self.settings)])  # fmt: skip
        wait = str(int(self.start_timeout_s))
        got = self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", wait,
                        "start", timeout_s=self.start_timeout_s + 10)  # fmt: skip
        self.started = True
        if got.returncode:
            raise RuntimeError(f"pg_ctl start failed ({got.returncode}): {got.stderr}\n{self.log_tail()}")

    def url(self, database: str = "postgres", with_password: bool = True) -> str:
        auth = f"{USER}:{self.password}" if with_password else USER
        return f"postgresql://{auth}@{HOST}:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its name."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return name

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """Stop the server (immediate; SIGKILL if that hangs) and remove the folder."""
        try:
            if self.started:
                pg_ctl = pg_bin("pg_ctl")
                try:
                    assert pg_ctl
                    self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", "stop",
                              timeout_s=15)  # fmt: skip
                except (subprocess.TimeoutExpired, AssertionError):
                    pass
                pid = self._postmaster_pid()
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        time.sleep(0.2)
                    except ProcessLookupError:
                        pass
        finally:
            self.started = False
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
