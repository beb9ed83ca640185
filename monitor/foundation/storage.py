"""The one storage client: clickhouse-connect, on embedded chDB or a ClickHouse server.

Everything nlpmon reads or writes goes through :class:`Store`. It wraps a single
clickhouse-connect client, connects lazily (so a server that is down at start
becomes reachable later without a restart) and turns driver exceptions into
two errors callers can act on: :class:`StoreUnavailable` (retry later) and
:class:`StoreBusy` (another process holds the embedded data directory).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect import dbapi
from clickhouse_connect.driver.exceptions import ClickHouseError

from monitor.foundation.config import Config

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store answered with an error."""


class StoreUnavailable(StoreError):
    """The store could not be reached or failed; the operation may be retried."""


class StoreBusy(StoreError):
    """The embedded data directory is held by another process."""


def embedded_path(url: str) -> str | None:
    """The data directory of a ``chdb://<dir>`` URL, or None for a server URL.

    ``chdb://./var/clickhouse`` is relative to the working directory and
    ``chdb:///srv/nlpmon`` is absolute; the URL is not parsed as host/path
    because a relative directory is not a host.
    """
    if not url.startswith("chdb://"):
        return None
    return str(Path(url[len("chdb://"):]).expanduser().resolve())


class _BorrowedConnection(dbapi.Connection):
    """A DB-API connection over the store's client, for alembic's SQLAlchemy engine."""

    def __init__(self, client):  # noqa: D107 - deliberately skips the parent, which opens a new client
        self.client = client
        self.timezone = client.server_tz

    def close(self) -> None:
        pass  # the Store owns the client


class Store:
    def __init__(self, url: str, database: str, connect_timeout: float = 5.0):
        self.url = url
        self.database = database
        self.connect_timeout = connect_timeout
        self.path = embedded_path(url)
        self._client = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> "Store":
        ch = config.clickhouse
        return cls(ch.url, ch.database, ch.connect_timeout_seconds)

    @property
    def embedded(self) -> bool:
        return self.path is not None

    # -- connection ---------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self):
        if self.embedded:
            return self._connect_embedded()
        parsed = urlparse(self.url)
        database = parsed.path.strip("/") or self.database
        try:
            client = clickhouse_connect.get_client(
                dsn=self.url, database="default", connect_timeout=self.connect_timeout,
                autogenerate_session_id=False)
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.database = database
            self.database = database
            return client
        except Exception as exc:  # the driver raises several kinds for a dead server
            raise StoreUnavailable(f"ClickHouse at {parsed.hostname}:{parsed.port or 8123} is unreachable: "
                                   f"{_first_line(exc)}") from None

    def _connect_embedded(self):
        os.makedirs(self.path, exist_ok=True)
        native = tempfile.TemporaryFile()
        try:
            with _native_stderr_to(native):
                boot = clickhouse_connect.get_client(interface="chdb", path=self.path)
            boot.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            boot.close()
            return clickhouse_connect.get_client(interface="chdb", path=self.path, database=self.database)
        except Exception as exc:
            native.seek(0)
            text = str(exc) + native.read().decode(errors="replace")
            if "Cannot lock file" in text or "EmbeddedServer" in text:
                raise StoreBusy(
                    f"the embedded store {self.path} is in use by another process "
                    f"(is `nlpmon serve` running?); stop it, or use its HTTP API") from None
            raise StoreUnavailable(f"cannot open the embedded store {self.path}: {_first_line(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    def ping(self) -> bool:
        try:
            return self.scalar("SELECT 1") == 1
        except StoreError:
            return False

    # -- operations ---------------------------------------------------------
    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except ClickHouseError as exc:
            raise StoreUnavailable(_first_line(exc)) from exc
        except (OSError, ConnectionError) as exc:
            self._drop_client()
            raise StoreUnavailable(f"ClickHouse connection failed: {_first_line(exc)}") from exc

    def _drop_client(self) -> None:
        if not self.embedded:
            self._client = None

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call(lambda: self.client.command(sql, parameters=parameters))

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return self._call(lambda: self.client.query(sql, parameters=parameters).result_rows)

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict]:
        def run():
            result = self.client.query(sql, parameters=parameters)
            names = result.column_names
            return [dict(zip(names, row)) for row in result.result_rows]
        return self._call(run)

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.query(sql, parameters)
        return rows[0][0] if rows else None

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]) -> int:
        if not rows:
            return 0
        self._call(lambda: self.client.insert(table, rows, column_names=list(column_names)))
        return len(rows)

    def insert_columns(self, table: str, columns: Sequence[Iterable[Any]], column_names: Sequence[str]) -> None:
        self._call(lambda: self.client.insert(table, list(columns), column_names=list(column_names),
                                              column_oriented=True))

    def dbapi_connection(self) -> dbapi.Connection:
        return _BorrowedConnection(self.client)

    def describe(self) -> str:
        if self.embedded:
            return f"embedded chDB at {self.path}, database {self.database}"
        p = urlparse(self.url)
        return f"ClickHouse at {p.hostname}:{p.port or 8123}, database {self.database}"


@contextlib.contextmanager
def _native_stderr_to(target):
    """chDB's C++ engine writes its own errors to fd 2; keep them off the user's terminal.

    The caller turns them into one clear line instead.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(target.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
