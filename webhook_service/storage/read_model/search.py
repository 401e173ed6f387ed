"""How a request finds the texts holding a needle: the gram counts first, then the dialect's
plan, told what the counts know (storage/dialects/: each database's own indexes)."""

from __future__ import annotations

from sqlalchemy import Connection, false

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.dialects.search import SearchPlan
from webhook_service.storage.read_model.grams import texts_holding
from webhook_service.storage.read_model.senders import total_messages


def plan_search(conn: Connection, folded: str, alone: bool = False) -> SearchPlan:
    """The plan for a folded needle (`alone`: the read's only filter): one as short as the
    gram counts go (three characters, four on PostgreSQL) is looked up in them first (absent
    there, no text holds it, and nothing is read)."""
    dialect = dialect_of(conn)
    if len(folded) > dialect.longest_counted_gram:
        return dialect.search_plan(conn, folded, None, total_messages(conn), alone=alone)
    texts, total = texts_holding(conn, folded)
    if texts == 0:
        return SearchPlan([false()], known_count=0)
    return dialect.search_plan(conn, folded, texts, total, alone=alone)
