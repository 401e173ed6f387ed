"""GET /messages: filtered, paginated messages in (instant, message_id) order."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from webhook_service.api.inputs import load_messages_query
from webhook_service.api.outputs import page_document
from webhook_service.api.reads import read_transaction
from webhook_service.storage.cursor import encode_cursor
from webhook_service.storage.messages import list_messages

bp = Blueprint("messages", __name__)


@bp.get("/messages")
def get_messages():
    """One page of messages, the total matching the filters and the cursor of the next page;
    422 for bad parameters."""
    # A repeated parameter counts by its last value, as FastAPI reads it.
    query = load_messages_query(request.args)
    with read_transaction() as conn:
        page = list_messages(conn, query.message_filter, query.limit, query.offset, after=query.cursor)
    next_cursor = encode_cursor(page.next_position) if page.next_position is not None else None
    return jsonify(page_document(page, query.limit, query.offset, next_cursor))
