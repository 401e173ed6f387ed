"""schemathesis hooks: sign each generated POST /webhook body, so that generated payloads
get past the signature check into validation and storage."""

import json
import os

import schemathesis
from schemathesis.core import NotSet

from webhook_service.signatures import sign_legacy


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/webhook" or case.method.upper() != "POST":
        return
    # The exact bytes that are sent are the bytes signed (no body at all: an empty one).
    if isinstance(case.body, NotSet):
        body = b""
    elif isinstance(case.body, bytes):
        body = case.body
    else:
        body = json.dumps(case.body).encode()
    case.body = body
    case.headers = {**(case.headers or {}), "X-Signature": sign_legacy(os.environ["FUZZ_WEBHOOK_SECRET"], body)}
