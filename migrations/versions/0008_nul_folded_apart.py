"""Folded texts hold U+24B6 for a NUL, not U+2400, which a sender may write itself.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Case folding never leaves U+24B6 in a text, so a NUL in a needle now matches only a NUL
(it matched a sent U+2400 too). Only texts whose folded form holds U+2400 are folded again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD_FOLDED_NUL = "\u2400"
FOLDED_NUL = "\u24b6"


def _unescaped(stored: str) -> str:
    # PostgreSQL stores NUL as U+0001 U+0001 and U+0001 as U+0001 U+0002 (migration 0004).
    out, index = [], 0
    while index < len(stored):
        if stored[index] == "\x01" and index + 1 < len(stored):
            out.append("\x00" if stored[index + 1] == "\x01" else "\x01")
            index += 2
        else:
            out.append(stored[index])
            index += 1
    return "".join(out)


def _replace_folded(bind, sqlite: bool, position: int, old: str, new: str) -> None:
    # The SQLite text index is contentless: an entry is removed by giving its old value.
    if sqlite:
        bind.execute(
            sa.text(
                "INSERT INTO messages_text_fts (messages_text_fts, rowid, text_folded) VALUES ('delete', :id, :old)"
            ),
            {"id": position, "old": old},
        )
    bind.execute(sa.text("UPDATE messages SET text_folded = :new WHERE id = :id"), {"id": position, "new": new})
    if sqlite:
        bind.execute(
            sa.text("INSERT INTO messages_text_fts (rowid, text_folded) VALUES (:id, :new)"),
            {"id": position, "new": new},
        )


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    rows = bind.execute(
        sa.text("SELECT id, text, text_folded FROM messages WHERE text_folded LIKE :pattern"),
        {"pattern": f"%{OLD_FOLDED_NUL}%"},
    ).all()
    for position, stored, old_folded in rows:
        text = stored if sqlite else _unescaped(stored)
        folded = text.casefold().replace("\x00", FOLDED_NUL)
        if folded != old_folded:
            _replace_folded(bind, sqlite, position, old_folded, folded)


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    rows = bind.execute(
        sa.text("SELECT id, text_folded FROM messages WHERE text_folded LIKE :pattern"), {"pattern": f"%{FOLDED_NUL}%"}
    ).all()
    for position, folded in rows:
        _replace_folded(bind, sqlite, position, folded, folded.replace(FOLDED_NUL, OLD_FOLDED_NUL))
