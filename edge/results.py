"""The results store: every compare run, kept in SQLite with its raw samples.

A :class:`Run` is one ``edge compare`` invocation (model, profile, target, the
arguments, the run context) with one :class:`RunRow` per backend and plan; both are
defined in :mod:`edge.runs` and importable from here. The store lives at
``$EDGE_RESULTS_DB``, else ``$XDG_DATA_HOME/edge/results.db``, else
``~/.local/share/edge/results.db``; ``--db`` overrides both.

Schema changes go through :data:`MIGRATIONS` (one SQL script per version, applied in
order and recorded in ``PRAGMA user_version``), so an old store is upgraded in place.
Each run is written in one transaction: a failed save leaves nothing behind.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from .errors import ResultsError
from .run_diff import diff_runs
from .runs import Run, RunRow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# MIGRATIONS[i] upgrades a store from user_version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL,
        model       TEXT NOT NULL,
        profile     TEXT,
        target      TEXT,
        args        TEXT NOT NULL,   -- JSON: the command's arguments
        status      TEXT NOT NULL,   -- ok | partial | failed
        context     TEXT NOT NULL,   -- JSON: host and device run context
        extra       TEXT NOT NULL    -- JSON: output paths, plan reasons, notes
    );
    CREATE TABLE rows (
        run_id          TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        idx             INTEGER NOT NULL,
        backend         TEXT NOT NULL,
        plan_name       TEXT NOT NULL,
        plan            TEXT,        -- JSON
        size_bytes      INTEGER,
        latency_ms      TEXT,        -- JSON: p50, p90, p99, mean, std, min, max
        p50_ms          REAL,
        latencies_ms    TEXT,        -- JSON: raw samples
        accuracy        REAL,
        metric          TEXT,
        peak_rss_mb     REAL,
        predicted       TEXT,        -- JSON
        delegation      TEXT,        -- JSON
        error           TEXT,
        error_type      TEXT,
        detail          TEXT NOT NULL, -- JSON: everything else of the row (bench context, ...)
        PRIMARY KEY (run_id, idx)
    );
    CREATE INDEX rows_backend ON rows(backend);
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def default_db_path() -> Path:
    """``$EDGE_RESULTS_DB``, else the user's data directory."""
    env = os.environ.get("EDGE_RESULTS_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "edge" / "results.db"


def new_run_id(now: datetime | None = None) -> str:
    """Short, sortable, unique: ``20240131-142501-3fa9``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


_ROW_COLUMNS = ("backend", "plan_name", "plan", "size_bytes", "latency_ms", "latencies_ms",
                "accuracy", "metric", "peak_rss_mb", "predicted", "delegation", "error", "error_type")
_JSON_COLUMNS = {"plan", "latency_ms", "latencies_ms", "predicted", "delegation"}


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration script (executescript would commit the transaction)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class ResultsStore:
    """The SQLite results store at ``path`` (created on first write)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else default_db_path()

    def _fail(self, exc: Exception, doing: str) -> ResultsError:
        return ResultsError(
            f"could not {doing} the results store {self.path}: {exc}. Expected an SQLite database "
            f"written by edge; move the file away (or pass --db / set EDGE_RESULTS_DB to another "
            "path) and re-run"
        )

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise ResultsError(
                f"no results store at {self.path}; run `edge compare` first, or pass --db / set "
                "EDGE_RESULTS_DB to the store you mean"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc, "open") from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        self._check_version(conn.execute("PRAGMA user_version").fetchone()[0])
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # Two processes may create the store at once: take the write lock first, then re-read
        # the version inside the transaction, so only one of them runs each migration.
        conn.isolation_level = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                self._check_version(version)
                for target in range(version, SCHEMA_VERSION):
                    log.debug("migrating %s to schema version %d", self.path, target + 1)
                    for statement in _statements(MIGRATIONS[target]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.isolation_level = ""

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"{self.path} has results schema version {version}, newer than this edge supports "
                f"({SCHEMA_VERSION}); upgrade edge or use another --db"
            )

    def schema_version(self) -> int:
        conn = self._connect(create=False)
        try:
            return conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()

    def save_run(self, run: Run) -> str:
        """Store ``run`` (assigning run_id and created_at when empty); returns the run_id."""
        run.run_id = run.run_id or new_run_id()
        run.created_at = run.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        conn = self._connect(create=True)
        try:
            with conn:  # one transaction: all or nothing
                conn.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.run_id, run.created_at, run.model, run.profile, run.target, _dumps(run.args),
                     run.status, _dumps(run.context), _dumps(run.extra)),
                )
                for idx, row in enumerate(run.rows):
                    self._insert_row(conn, run.run_id, idx, row)
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise self._fail(exc, "write to") from exc
        finally:
            conn.close()
        log.debug("saved run %s to %s", run.run_id, self.path)
        return run.run_id

    @staticmethod
    def _insert_row(conn: sqlite3.Connection, run_id: str, idx: int, row: RunRow) -> None:
        data = row.to_dict()
        values = [_dumps(data[c]) if c in _JSON_COLUMNS else data[c] for c in _ROW_COLUMNS]
        p50 = (row.latency_ms or {}).get("p50")
        detail = {k: v for k, v in data.items() if k not in _ROW_COLUMNS}
        conn.execute(
            f"INSERT INTO rows (run_id, idx, {', '.join(_ROW_COLUMNS)}, p50_ms, detail) "
            f"VALUES ({', '.join('?' * (len(_ROW_COLUMNS) + 4))})",
            (run_id, idx, *values, p50, _dumps(detail)),
        )

    def list_runs(self) -> list[dict]:
        """Summaries of every run, newest first (empty when the store does not exist yet)."""
        if not self.path.exists():
            return []
        conn = self._connect(create=False)
        try:
            # created_at has one-second resolution: insertion order (rowid) breaks ties.
            cur = conn.execute(
                "SELECT r.run_id, r.created_at, r.model, r.profile, r.target, r.status, "
                "COUNT(w.idx), SUM(w.error IS NULL), GROUP_CONCAT(DISTINCT w.backend) "
                "FROM runs r LEFT JOIN rows w ON w.run_id = r.run_id "
                "GROUP BY r.run_id ORDER BY r.created_at DESC, r.rowid DESC"
            )
            keys = ("run_id", "created_at", "model", "profile", "target", "status", "rows", "ok_rows",
                    "backends")
            out = [dict(zip(keys, rec)) for rec in cur.fetchall()]
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc
        finally:
            conn.close()
        for rec in out:
            rec["ok_rows"] = int(rec["ok_rows"] or 0)
            rec["backends"] = sorted((rec["backends"] or "").split(",")) if rec["backends"] else []
        return out

    def resolve(self, prefix: str) -> str:
        """The one run_id starting with ``prefix`` (or ``latest``), else a ResultsError."""
        conn = self._connect(create=False)
        try:
            if prefix in ("latest", "last"):
                rec = conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
                ids = [r[0] for r in rec.fetchall()]
            else:
                pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                cur = conn.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id",
                                   (pattern,))
                ids = [r[0] for r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc
        finally:
            conn.close()
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise ResultsError(
                f"no run matches '{prefix}' in {self.path}; `edge results list` shows the run ids"
            )
        raise ResultsError(
            f"'{prefix}' is ambiguous in {self.path}: it matches {', '.join(ids[:10])}"
            f"{' ...' if len(ids) > 10 else ''}; give more characters of the run id"
        )

    def get_run(self, run_id: str) -> Run:
        """The full run for a run id or a unique prefix of one."""
        run_id = self.resolve(run_id)
        conn = self._connect(create=False)
        try:
            rec = conn.execute("SELECT run_id, created_at, model, profile, target, args, status, context, "
                               "extra FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            cur = conn.execute(f"SELECT {', '.join(_ROW_COLUMNS)}, detail FROM rows WHERE run_id = ? "
                               "ORDER BY idx", (run_id,))
            rows = [self._row_from_record(r) for r in cur.fetchall()]
            run = Run(run_id=rec[0], created_at=rec[1], model=rec[2], profile=rec[3], target=rec[4],
                      args=json.loads(rec[5]), status=rec[6], context=json.loads(rec[7]),
                      extra=json.loads(rec[8]), rows=rows)
        except (sqlite3.Error, json.JSONDecodeError, TypeError) as exc:
            raise self._fail(exc, "read") from exc
        finally:
            conn.close()
        return run

    @staticmethod
    def _row_from_record(rec: tuple) -> RunRow:
        data = {c: (json.loads(v) if c in _JSON_COLUMNS and v is not None else v)
                for c, v in zip(_ROW_COLUMNS, rec)}
        data.update(json.loads(rec[-1]))
        return RunRow.from_dict(data)

    def delete_run(self, run_id: str) -> None:
        run_id = self.resolve(run_id)
        conn = self._connect(create=False)
        try:
            with conn:
                conn.execute("DELETE FROM rows WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        except sqlite3.Error as exc:
            raise self._fail(exc, "write to") from exc
        finally:
            conn.close()


def compare_runs(a: Run, b: Run) -> dict:
    """Per backend/plan deltas of ``b`` against ``a``, and flags where contexts differ.

    See :mod:`edge.run_diff` for the flags raised.
    """
    return diff_runs(a, b)
