"""The one storage client: clickhouse-connect, on embedded chDB or a ClickHouse server.

Everything nlpmon reads or writes goes through :class:`Store`. It wraps a single
clickhouse-connect client, connects lazily (so a server that is down at start
becomes reachable later without a restart) and turns driver exceptions into
errors that say what they are:

- :class:`StoreUnavailable`: the store cannot be reached or cannot serve now
  (connection refused, timeouts, a missing or read-only table, memory or
  concurrency limits). Retrying later can succeed: the API answers 503 with
  Retry-After and a client resends its batch.
- :class:`StoreQueryError`: the store rejected the statement itself (an unknown
  column, a syntax error, a type mismatch, a value the driver cannot encode).
  That is a bug in nlpmon: the API answers 500 with a reference to the full
  error in the log, and never asks a client to retry a batch that would fail again.
- :class:`StoreBusy`: another process holds the embedded data directory.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect import dbapi
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError, ProgrammingError

from monitor.foundation.config import Config

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store answered with an error."""


class StoreUnavailable(StoreError):
    """The store could not be reached or failed; the operation may be retried."""


class StoreBusy(StoreError):
    """The embedded data directory is held by another process."""


class StoreQueryError(StoreError):
    """The store rejected the statement: a bug in the statement, not an outage; retrying cannot help.

    ``sql`` is the statement (for the log, never for a client: it may show the schema).
    """

    def __init__(self, message: str, sql: str = ""):
        super().__init__(message)
        self.sql = sql


# ClickHouse error codes that mean "this statement is wrong", whatever the store's health: the
# analyzer and the parser refusing it, and values that do not fit their types. Every other
# server error (timeouts, limits, missing tables during a migration, Keeper trouble, ...) is
# treated as unavailability, because retrying later may succeed and losing a batch is worse
# than retrying one that fails again.
REJECTED_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    8,    # THERE_IS_NO_COLUMN
    10,   # NOT_FOUND_COLUMN_IN_BLOCK
    16,   # NO_SUCH_COLUMN_IN_TABLE
    20,   # NUMBER_OF_COLUMNS_DOESNT_MATCH
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,   # BAD_ARGUMENTS
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    42,   # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,   # ILLEGAL_TYPE_OF_ARGUMENT
    44,   # ILLEGAL_COLUMN
    46,   # UNKNOWN_FUNCTION
    47,   # UNKNOWN_IDENTIFIER
    53,   # TYPE_MISMATCH
    62,   # SYNTAX_ERROR
    63,   # UNKNOWN_AGGREGATE_FUNCTION
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    115,  # UNKNOWN_SETTING
    117,  # INCORRECT_DATA
    179,  # MULTIPLE_EXPRESSIONS_FOR_ALIAS
    181,  # ILLEGAL_FINAL
    184,  # ILLEGAL_AGGREGATION
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    215,  # NOT_AN_AGGREGATE
    258,  # UNION_ALL_RESULT_STRUCTURES_MISMATCH
    352,  # AMBIGUOUS_COLUMN_NAME
    386,  # NO_COMMON_TYPE
    403,  # INVALID_JOIN_ON_EXPRESSION
    456,  # UNKNOWN_QUERY_PARAMETER
    457,  # BAD_QUERY_PARAMETER
})
_CODE = re.compile(r"\bCode:\s*(\d+)")


def _rejected(exc: BaseException) -> bool:
    """Whether a driver error says the statement itself is wrong (see REJECTED_CODES)."""
    if isinstance(exc, (ProgrammingError, DataError)):
        return True  # refused by the driver before reaching the store: unknown insert column, bad value
    code = getattr(exc, "code", None)
    if code is None:
        m = _CODE.search(str(exc))
        code = int(m.group(1)) if m else None
    return code in REJECTED_CODES


def embedded_path(url: str) -> str | None:
    """The data directory of a ``chdb://<dir>`` URL, or None for a server URL.

    ``chdb://./var/clickhouse`` is relative to the working directory and
    ``chdb:///srv/nlpmon`` is absolute; the URL is not parsed as host/path
    because a relative directory is not a host.
    """
    if not url.startswith("chdb://"):
        return None
    return str(Path(url[len("chdb://"):]).expanduser().resolve())


def engine_options(config: Config) -> dict[str, int]:
    """The embedded engine's start-up settings (see ClickHouseConfig.max_memory and cache_memory)."""
    ch = config.clickhouse
    caches = ("mark_cache_size", "index_mark_cache_size", "primary_index_cache_size", "compiled_expression_cache_size",
              "query_condition_cache_size")
    return {"max_server_memory_usage": ch.max_memory, **{name: ch.cache_memory for name in caches}}


class _BorrowedConnection(dbapi.Connection):
    """A DB-API connection over the store's client, for alembic's SQLAlchemy engine."""

    def __init__(self, client):  # noqa: D107 - deliberately skips the parent, which opens a new client
        self.client = client
        self.timezone = client.server_tz

    def close(self) -> None:
        pass  # the Store owns the client


class Store:
    """One client over one store. Times come back timezone-aware in UTC (the columns are UTC), here and
    nowhere else: no reader fixes a timezone.

    On on a replicated cluster (``cluster`` set) it also knows which
    settings make a read see every acknowledged write and a write durable before it is acknowledged.

    Those settings live here, in one place, and only statements that need them ask (``agree=True``):
    the lease, the review leases and the silences. On a cluster a read with ``agree`` runs with
    ``select_sequential_consistency = 1`` (one more Keeper round trip per query, and an error instead of
    a stale answer when no replica is up to date), and a write with ``insert_quorum = 'auto'`` and
    ``insert_quorum_parallel = 0`` (acknowledged once a majority of replicas hold it; it fails when
    fewer are up, and a second quorum insert into the same table waits for the first). On one node
    both are empty: a node always reads its own writes.
    """

    def __init__(self, url: str, database: str, connect_timeout: float = 5.0, cluster: str | None = None,
                 engine_options: dict[str, Any] | None = None):
        self.url = url
        self.engine_options = engine_options or {}
        self.database = database
        self.connect_timeout = connect_timeout
        self.cluster = cluster
        self.path = embedded_path(url)
        self._client = None
        self._lock = threading.Lock()
        self.agreed_read = {"select_sequential_consistency": 1} if cluster else {}
        self.agreed_write = {"insert_quorum": "auto", "insert_quorum_parallel": 0} if cluster else {}

    @classmethod
    def from_config(cls, config: Config) -> "Store":
        ch = config.clickhouse
        return cls(ch.url, ch.database, ch.connect_timeout_seconds, ch.cluster, engine_options(config))

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
                autogenerate_session_id=False, tz_mode="aware")
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
                boot = clickhouse_connect.get_client(interface="chdb", path=self.path,
                                                     chdb_options=self.engine_options)
            boot.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            boot.close()
            return clickhouse_connect.get_client(interface="chdb", path=self.path, database=self.database,
                                                 tz_mode="aware", chdb_options=self.engine_options)
        except Exception as exc:
            native.seek(0)
            text = str(exc) + native.read().decode(errors="replace")
            if "EmbeddedServer already initialized" in text:
                # chDB holds one embedded store per process: a second path in the same process is a
                # programming error, not another process holding the lock.
                raise StoreBusy(f"this process already has another embedded store open; chDB opens one "
                                f"per process, so {self.path} cannot be opened here: "
                                f"{_first_line(exc)}") from None
            if "Cannot lock file" in text or "EmbeddedServer" in text:
                raise StoreBusy(
                    f"the embedded store {self.path} is in use by another process "
                    f"(is `nlpmon serve` running?); stop it, or use its HTTP API") from None
            raise StoreUnavailable(f"cannot open the embedded store {self.path}: {_first_line(exc)}") from None
        finally:
            native.close()

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
    def _call(self, sql: str, fn):
        try:
            return fn()
        except StoreError:
            raise
        except ClickHouseError as exc:
            if _rejected(exc):
                raise StoreQueryError(_first_line(exc), sql) from exc
            raise StoreUnavailable(_first_line(exc)) from exc
        except (OSError, ConnectionError) as exc:
            self._drop_client()
            raise StoreUnavailable(f"ClickHouse connection failed: {_first_line(exc)}") from exc
        except (ValueError, TypeError, OverflowError) as exc:
            # The driver could not encode a value for its column: the caller built a bad row.
            raise StoreQueryError(f"cannot encode a value: {_first_line(exc)}", sql) from exc

    def _drop_client(self) -> None:
        if not self.embedded:
            self._client = None

    def _settings(self, agreed: dict, agree: bool, settings: dict | None) -> dict | None:
        out = {**(agreed if agree else {}), **(settings or {})}
        return out or None

    def command(self, sql: str, parameters: dict[str, Any] | None = None, agree: bool = False,
                settings: dict[str, Any] | None = None) -> Any:
        """A statement; ``agree``: an INSERT ... SELECT others must see at once (see the class)."""
        s = self._settings(self.agreed_write, agree, settings)
        return self._call(sql, lambda: self.client.command(sql, parameters=parameters, settings=s))

    def query(self, sql: str, parameters: dict[str, Any] | None = None, agree: bool = False) -> list[tuple]:
        s = self._settings(self.agreed_read, agree, None)
        return self._call(sql, lambda: self.client.query(sql, parameters=parameters, settings=s).result_rows)

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None, agree: bool = False) -> list[dict]:
        s = self._settings(self.agreed_read, agree, None)

        def run():
            result = self.client.query(sql, parameters=parameters, settings=s)
            names = result.column_names
            return [dict(zip(names, row)) for row in result.result_rows]
        return self._call(sql, run)

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None, agree: bool = False) -> Any:
        rows = self.query(sql, parameters, agree=agree)
        return rows[0][0] if rows else None

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], agree: bool = False,
               settings: dict[str, Any] | None = None) -> int:
        if not rows:
            return 0
        s = self._settings(self.agreed_write, agree, settings)
        self._call(f"INSERT INTO {table}", lambda: self.client.insert(table, rows, column_names=list(column_names),
                                                                      settings=s))
        return len(rows)

    def insert_columns(self, table: str, columns: Sequence[Iterable[Any]], column_names: Sequence[str],
                       settings: dict[str, Any] | None = None) -> None:
        self._call(f"INSERT INTO {table}", lambda: self.client.insert(table, list(columns),
                                                                      column_names=list(column_names),
                                                                      column_oriented=True, settings=settings))

    def sync_replica(self, table: str) -> None:
        """On a cluster, wait until this replica holds every part the replication log names for
        ``table`` (a new active scheduler catching up with what the previous one wrote elsewhere)."""
        if self.cluster:
            self.command(f"SYSTEM SYNC REPLICA `{table}`")

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
