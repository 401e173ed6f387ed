"""Picking lines out of the service's JSON log."""

from __future__ import annotations


def request_lines(lines: list[dict]) -> list[dict]:
    """The one-per-request lines."""
    return [line for line in lines if line.get("event") == "request"]
