"""The naive design, for comparison: one SQLite table and a plain LIKE scan, served by Flask.

What a small receiver (say FastAPI + SQLite) does for the same API: a table of the messages
with an index on ts and one on (sender, ts), `text LIKE '%q%'` for q, `count(*)` for the
total and ORDER BY ts LIMIT/OFFSET for the page (a cursor becomes a keyset condition, which
is generous), and /stats as GROUP BY over the table; no signature checks, metrics, logs or
read budget. bench/queries.py --peer builds it from the same corpus and serves `app` with
the same gunicorn settings (PEER_DATABASE names the file), so both answer over HTTP.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from pathlib import Path

from flask import Flask, jsonify, request

from webhook_service.storage.cursor import decode_cursor

SCHEMA = (
    (
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE NOT NULL, from_msisdn TEXT NOT NULL, "
        "to_msisdn TEXT NOT NULL, ts TEXT NOT NULL, text TEXT, created_at TEXT NOT NULL)"
    ),
    "CREATE INDEX ix_ts ON messages (ts, message_id)",
    "CREATE INDEX ix_from_ts ON messages (from_msisdn, ts, message_id)",
)
PAGE = 50


def build(path: Path, messages) -> None:
    """The peer's database of `messages` (NewMessage), in one transaction per 20,000."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            conn.execute(statement)
        batch = []
        for message in messages:
            batch.append((message.message_id, message.sender, message.recipient, message.ts, message.text))
            if len(batch) == 20_000:
                _insert(conn, batch)
                batch = []
        _insert(conn, batch)
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    with conn:
        conn.executemany(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at) "
            "VALUES (?, ?, ?, ?, ?, '2025-01-01T00:00:00.000000Z')",
            rows,
        )


def statements(path_and_query: str) -> list[tuple[str, tuple]]:
    """The SQL the peer runs for one request of the service's API."""
    path, _, query = path_and_query.partition("?")
    if path == "/stats":
        return [
            ("SELECT count(*), count(DISTINCT from_msisdn), min(ts), max(ts) FROM messages", ()),
            (
                (
                    "SELECT from_msisdn, count(*) AS n FROM messages GROUP BY from_msisdn "
                    "ORDER BY n DESC, from_msisdn LIMIT 10"
                ),
                (),
            ),
        ]
    args = {key: values[-1] for key, values in urllib.parse.parse_qs(query).items()}
    conditions, parameters = [], []
    if "from" in args:
        conditions.append("from_msisdn = ?")
        parameters.append(args["from"])
    if "since" in args:
        conditions.append("ts >= ?")
        parameters.append(args["since"])
    if "q" in args:
        conditions.append("text LIKE ? ESCAPE '\\'")
        escaped = args["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        parameters.append(f"%{escaped}%")
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    count = (f"SELECT count(*) FROM messages{where}", tuple(parameters))
    page_conditions, page_parameters = list(conditions), list(parameters)
    if "cursor" in args:
        position = decode_cursor(args["cursor"])
        page_conditions.append("(ts, message_id) > (?, ?)")
        page_parameters += [position.instant[:19] + "Z", position.message_id]
    page_where = " WHERE " + " AND ".join(page_conditions) if page_conditions else ""
    page = (
        (
            f"SELECT message_id, from_msisdn, to_msisdn, ts, text, created_at FROM messages{page_where} "
            "ORDER BY ts, message_id LIMIT ? OFFSET ?"
        ),
        (*page_parameters, PAGE, int(args.get("offset", 0))),
    )
    return [count, page]


app = Flask(__name__)
_connections = threading.local()


def _connection() -> sqlite3.Connection:
    conn = getattr(_connections, "conn", None)
    if conn is None:
        conn = _connections.conn = sqlite3.connect(os.environ["PEER_DATABASE"], check_same_thread=False)
    return conn


@app.get("/messages")
@app.get("/stats")
def answer():
    conn = _connection()
    results = [conn.execute(sql, parameters).fetchall() for sql, parameters in statements(request.full_path)]
    if request.path == "/stats":
        (total, senders, first, last), top = results[0][0], results[1]
        return jsonify(
            {
                "total_messages": total,
                "senders_count": senders,
                "top_senders": [{"from": sender, "count": n} for sender, n in top],
                "first_message_ts": first,
                "last_message_ts": last,
            }
        )
    columns = ("message_id", "from", "to", "ts", "text", "created_at")
    return jsonify({"data": [dict(zip(columns, row, strict=True)) for row in results[1]], "total": results[0][0][0]})
