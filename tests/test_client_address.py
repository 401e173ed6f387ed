import ipaddress

import pytest

from tests.support.logs import request_lines
from webhook_service.observability.requests import client_address

PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    "remote, forwarded, expected",
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),
        # A client that is not a trusted proxy cannot choose its logged address.
        ("203.0.113.50", "1.2.3.4", "203.0.113.50"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
        ("127.0.0.1", "10.0.0.1, 10.0.0.2", "10.0.0.1"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_proxies(remote, forwarded, expected):
    assert client_address(remote, forwarded, PROXIES) == expected


def test_forwarded_for_reaches_the_request_log(client, log_lines):
    # The test client connects from 127.0.0.1, a trusted proxy by default.
    response = client.get("/stats", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert response.status_code == 200
    [line] = request_lines(log_lines())
    assert line["client"] == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(client, log_lines):
    client.get("/stats", headers={"X-Forwarded-For": "203.0.113.9"}, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    [line] = request_lines(log_lines())
    assert line["client"] == "192.0.2.1"
