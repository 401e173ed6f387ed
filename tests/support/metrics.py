"""Parsing Prometheus' text format into {(name, labels): value}."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(exposition: str) -> dict:
    """Every sample of a scrape, keyed by (name, sorted label items)."""
    values = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    """One sample's value; a series that is not exported at all fails the test (KeyError)."""
    return values[(name, tuple(sorted(labels.items())))]


def samples(client) -> dict:
    """GET /metrics from a Flask test client, parsed."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.get_data(as_text=True))
