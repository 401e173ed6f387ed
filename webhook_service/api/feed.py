"""GET /feed: every stored message once, in the order stored; long-polled when caught up."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from webhook_service.api.context import current_feed_waiters
from webhook_service.api.errors import FEED_RETRY_AFTER_SECONDS, json_error
from webhook_service.api.inputs import load_feed_query, position_beyond_end
from webhook_service.api.outputs import feed_document
from webhook_service.api.reads import read_transaction
from webhook_service.storage.commit_signal import TooManyWaiting
from webhook_service.storage.feed import BEGINNING, LATEST, latest_position, read_feed

bp = Blueprint("feed", __name__)


@bp.get("/feed")
def get_feed():
    """Messages stored after `after`; with `wait`, held until one is stored (or `wait` ends).
    422 for bad parameters; 429 with Retry-After for a reader that would wait while this
    worker holds FEED_MAX_WAITERS already."""
    query = load_feed_query(request.args)
    deadline = time.monotonic() + query.wait_seconds
    waiters = current_feed_waiters()
    after = BEGINNING if query.after is None else query.after
    while True:
        counter = waiters.counter()
        # A short read, its connection back in the pool before any wait.
        with read_transaction() as conn:
            latest = latest_position(conn)
            if after == LATEST:
                after = latest
            elif after > latest:
                # Every position the feed hands out is at most its end then, and the end only
                # grows: a larger one was forged or mistyped, and would skip what lies below it.
                raise position_beyond_end()
            page = read_feed(conn, after, query.limit)
        try:
            if page.items or query.wait_seconds == 0 or not waiters.wait(counter, latest, deadline):
                return jsonify(feed_document(page))
        except TooManyWaiting:
            response = json_error(429, TOO_MANY_WAITING)
            response.headers["Retry-After"] = str(FEED_RETRY_AFTER_SECONDS)
            return response


TOO_MANY_WAITING = "too many readers are waiting on this worker; ask again after Retry-After seconds"
