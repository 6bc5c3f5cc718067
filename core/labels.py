"""User labels: an event-sourced SQLite store that lives beside the (read-only) bundle.

Every labelling action is one row of ``events`` (label, author, UTC time, how it was made) plus its objects in
``event_members``. Nothing is updated in place: removing objects from a label is a ``remove`` event, undo is an
``undo`` event naming the event it cancels. The current labels are derived: per (object, label) the latest
event that is not undone wins, and the object carries the label if that event is an ``add``.

Durability and concurrency:
- WAL journal, so readers never block the writer and a writer never blocks readers;
- ``synchronous=FULL``: in WAL mode NORMAL already survives a killed process, but may lose the last commits on
  power loss or an OS crash; FULL adds one fsync per commit, and labelling happens at human pace, so the cost
  (~ms) is invisible while an acknowledged label is never lost;
- writes take the write lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for another writer,
  so two writers (threads or processes) queue instead of failing;
- one connection per thread (sqlite3 connections must not be shared across threads).
"""
from __future__ import annotations

import datetime as _dt
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

METHODS = ("lasso", "box", "click", "probe-candidate", "import", "label-filter")
KINDS = ("add", "remove", "undo")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('add', 'remove', 'undo')),
    label   TEXT,
    author  TEXT NOT NULL,
    time    TEXT NOT NULL,              -- ISO 8601, UTC
    method  TEXT,
    undoes  INTEGER REFERENCES events(id),
    n_objects INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS event_members (
    event_id  INTEGER NOT NULL REFERENCES events(id),
    object_id TEXT NOT NULL,
    PRIMARY KEY (event_id, object_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_members_object ON event_members(object_id);
CREATE UNIQUE INDEX IF NOT EXISTS events_undoes ON events(undoes) WHERE undoes IS NOT NULL;
"""

class LabelStoreError(Exception):
    """A label store that cannot be used; the message names the file and what to do."""


def latest_label_per_object(current: pd.DataFrame, object_ids) -> np.ndarray:
    """Per object id the label given to it most recently in ``current`` (a ``LabelStore.current()`` table, possibly
    filtered), None where it has none: an object array aligned with ``object_ids``."""
    cur = current.sort_values("event_id").drop_duplicates("object_id", keep="last")
    per_object = pd.Series(cur["label"].to_numpy(), index=cur["object_id"].astype(str))
    values = pd.Series(np.asarray(object_ids).astype(str)).map(per_object)
    return values.astype(object).where(values.notna(), None).to_numpy()


def default_labels_path(bundle_path: str | Path) -> Path:
    """``<bundle folder>.labels.sqlite`` next to the bundle folder, never inside the read-only bundle."""
    bundle_path = Path(bundle_path).resolve()
    return bundle_path.with_name(bundle_path.name + ".labels.sqlite")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _object_ids(object_ids: Iterable) -> list[str]:
    """Object ids as text (catalogues use strings or int64 ids), de-duplicated, order kept."""
    return list(dict.fromkeys(str(o) for o in object_ids))


class LabelStore:
    """The label store at ``path`` (created if missing). Safe to use from several threads and processes."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        if self.path.is_dir():
            raise LabelStoreError(f"{self.path}: is a folder; give a file path for the label store (e.g. labels.sqlite)")
        if not self.path.parent.is_dir():
            raise LabelStoreError(f"{self.path}: the folder {self.path.parent} does not exist; create it or pick another --labels path")
        self._refuse_foreign_database()
        self._create_schema()

    @classmethod
    def beside(cls, bundle_path: str | Path) -> "LabelStore":
        return cls(default_labels_path(bundle_path))

    # -------------------------------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            con.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise LabelStoreError(f"{self.path}: cannot be opened as a label store ({e}); move it aside or pick another --labels path") from e
        if mode.lower() != "wal":
            raise LabelStoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the label store on a local disk")
        return con

    @property
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._connect()
        return con

    @contextmanager
    def _write(self):
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _refuse_foreign_database(self) -> None:
        """An existing file must be a label store already: another program's SQLite database given as --labels is
        refused before anything is written into it."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                version = (con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                           if "meta" in tables else None)
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            raise LabelStoreError(f"{self.path}: is not an SQLite label store ({e}); move it aside or pick another "
                                  "--labels path") from e
        if version is None or not {"events", "event_members"} <= tables:
            shown = ", ".join(sorted(tables)[:5]) or "none"
            raise LabelStoreError(f"{self.path}: is an SQLite database but not a label store (its tables: {shown}); "
                                  "it was left untouched: pick another --labels path")

    def _create_schema(self) -> None:
        try:
            with self._write() as con:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    con.execute(stmt)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                version = int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        except (sqlite3.DatabaseError, ValueError, TypeError) as e:
            raise LabelStoreError(f"{self.path}: is not a usable label store ({e}); move it aside or pick another "
                                  "--labels path") from e
        if version != SCHEMA_VERSION:
            raise LabelStoreError(f"{self.path}: label store schema {version} is not supported (this software reads {SCHEMA_VERSION})")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -------------------------------------------------------------------------------------- writing
    def add(self, label: str, object_ids: Iterable, *, author: str, method: str) -> int:
        """Give ``label`` to the objects; returns the event id once it is committed to disk."""
        return self._record("add", label, object_ids, author, method)

    def remove(self, label: str, object_ids: Iterable, *, author: str, method: str = "click") -> int:
        """Take ``label`` off the objects (they keep their other labels); returns the event id."""
        return self._record("remove", label, object_ids, author, method)

    def _record(self, kind: str, label: str, object_ids: Iterable, author: str, method: str) -> int:
        label = _clean_text(label, "label")
        author = _clean_text(author, "author")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        ids = _object_ids(object_ids)
        if not ids:
            raise ValueError(f"no objects given to {kind} label {label!r}")
        with self._write() as con:
            cur = con.execute(
                "INSERT INTO events (kind, label, author, time, method, n_objects) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, label, author, utc_now(), method, len(ids)))
            event_id = int(cur.lastrowid)
            con.executemany("INSERT INTO event_members VALUES (?, ?)", ((event_id, o) for o in ids))
        return event_id

    def undo_last(self, *, author: str, only_by: str | None = None) -> int | None:
        """Cancel the newest add/remove event not yet undone (only ``only_by``'s, if given).

        Returns the id of the cancelled event, or None when there is nothing to undo. Repeated calls walk back.
        """
        author = _clean_text(author, "author")
        with self._write() as con:
            sql = ("SELECT id FROM events e WHERE kind IN ('add', 'remove') "
                   "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.id)")
            args: tuple = ()
            if only_by is not None:
                sql += " AND author = ?"
                args = (only_by,)
            row = con.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is None:
                return None
            con.execute("INSERT INTO events (kind, label, author, time, method, undoes) "
                        "SELECT 'undo', label, ?, ?, NULL, id FROM events WHERE id = ?", (author, utc_now(), row[0]))
        return int(row[0])

    # -------------------------------------------------------------------------------------- reading
    def events(self) -> pd.DataFrame:
        """Every event, oldest first: id, kind, label, author, time, method, undoes, n_objects, undone."""
        return pd.read_sql_query(
            "SELECT e.*, EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.id) AS undone FROM events e ORDER BY e.id",
            self._con)

    def event_members(self, event_id: int) -> list[str]:
        rows = self._con.execute("SELECT object_id FROM event_members WHERE event_id = ? ORDER BY object_id", (event_id,))
        return [r[0] for r in rows]

    def current(self, label: str | None = None) -> pd.DataFrame:
        """Current (object_id, label) pairs with the author, time and method of the event that set them.

        Per (object, label) the newest add/remove event not undone wins. Derived in pandas (a window query in
        SQLite took ~5 s at 375 k memberships) and cached until the next event: events are append-only, so the
        newest event id says whether anything changed, whichever process wrote it.
        """
        last = self._con.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
        cached = getattr(self._local, "current", None)
        if cached is None or cached[0] != last:
            cached = self._local.current = (last, self._derive_current())
        cur = cached[1]
        if label is not None:
            cur = cur[cur["label"] == label].reset_index(drop=True)
        return cur.copy()

    def _derive_current(self) -> pd.DataFrame:
        con = self._con
        con.execute("BEGIN")  # one snapshot for both reads
        try:
            live = pd.read_sql_query(
                "SELECT id AS event_id, kind, label, author, time, method FROM events e WHERE kind IN ('add', 'remove') "
                "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.id)", con)
            members = pd.read_sql_query("SELECT event_id, object_id FROM event_members", con)
        finally:
            con.execute("COMMIT")
        rows = members.merge(live, on="event_id").sort_values("event_id", kind="stable")
        rows = rows.drop_duplicates(["object_id", "label"], keep="last")
        rows = rows[rows["kind"] == "add"].sort_values(["label", "object_id"])
        return rows[["object_id", "label", "author", "time", "method", "event_id"]].reset_index(drop=True)

    def members(self, label: str) -> list[str]:
        return self.current(label)["object_id"].tolist()

    def label_counts(self) -> dict[str, int]:
        """Current labels and how many objects carry each, by name."""
        counts = self.current().groupby("label")["object_id"].size()
        return {str(k): int(v) for k, v in counts.items()}

    def labels_of(self, object_id) -> list[str]:
        cur = self.current()
        return sorted(cur.loc[cur["object_id"] == str(object_id), "label"])

    def integrity_check(self) -> str:
        return self._con.execute("PRAGMA integrity_check").fetchone()[0]


MAX_NAME_CHARS = 200   # a label name is shown in every session's legend and menus: a name, not a document


def _clean_text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty name, not {value!r}")
    if len(value.strip()) > MAX_NAME_CHARS:
        raise ValueError(f"{what} is {len(value.strip()):,} characters long; keep it under {MAX_NAME_CHARS}")
    return value.strip()
