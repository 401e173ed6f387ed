"""Logging, request ids and metrics: everything an operator reads about a running service."""
