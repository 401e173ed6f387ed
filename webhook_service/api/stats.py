"""GET /stats: totals, top senders and the time range of stored messages; GET /stats/timeline:
messages per hour or day."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from webhook_service.api.inputs import load_timeline_query
from webhook_service.api.outputs import forwarding_document, stats_document, timeline_document
from webhook_service.api.reads import read_transaction
from webhook_service.storage.forwarding import destination_summaries
from webhook_service.storage.messages import message_stats
from webhook_service.storage.read_model.timeline import read_timeline

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def get_stats():
    """Aggregates over every stored message; first/last ts are null when there are none."""
    with read_transaction() as conn:
        stats = message_stats(conn)
    return jsonify(stats_document(stats))


@bp.get("/stats/timeline")
def get_timeline():
    """Messages per hour or day they were stored, from maintained counts; 422 for bad parameters."""
    buckets = load_timeline_query(request.args)
    with read_transaction() as conn:
        points = read_timeline(conn, buckets)
    return jsonify(timeline_document(buckets.bucket, points))


@bp.get("/stats/forwarding")
def get_forwarding():
    """Each forwarding destination's lag, retries and dead letters, from the forwarder's tables."""
    with read_transaction() as conn:
        summaries = destination_summaries(conn)
    return jsonify(forwarding_document(summaries, time.time()))
