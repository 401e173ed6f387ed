"""Bearer tokens for the read endpoints and /metrics (API_TOKENS, METRICS_TOKEN)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from flask import Response, request

from webhook_service.api.errors import json_error
from webhook_service.observability.requests import note_refusal_reason

BEARER_PREFIX = "bearer "


def token_matches(authorization: str | None, tokens: Sequence[str]) -> bool:
    """True when `Authorization: Bearer <token>` names one of `tokens`.

    Every token is compared, each through a digest, so neither the position of a
    difference nor a token's length shows in the time taken.
    """
    if not authorization or authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
        return False
    offered = hashlib.sha256(authorization[len(BEARER_PREFIX) :].strip().encode("utf-8", "replace")).digest()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(offered, hashlib.sha256(token.encode("utf-8")).digest())
    return matched


def not_authenticated() -> Response:
    """401 with the challenge a bearer-token client expects."""
    response = json_error(401, "not authenticated")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def bearer_guard(tokens: Sequence[str]) -> Callable[[], Response | None]:
    """A before-request check: None when `tokens` is empty or one is presented, else a 401."""

    def check() -> Response | None:
        if not tokens:
            return None
        authorization = request.headers.get("Authorization")
        if token_matches(authorization, tokens):
            return None
        note_refusal_reason("missing_token" if not authorization else "bad_token")
        return not_authenticated()

    return check
