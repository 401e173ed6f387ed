"""GET /stats: totals, top senders and the time range of stored messages."""

from __future__ import annotations

from flask import Blueprint, jsonify

from webhook_service.api.outputs import stats_document
from webhook_service.api.reads import read_transaction
from webhook_service.storage.messages import message_stats

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def get_stats():
    """Aggregates over every stored message; first/last ts are null when there are none."""
    with read_transaction() as conn:
        stats = message_stats(conn)
    return jsonify(stats_document(stats))
