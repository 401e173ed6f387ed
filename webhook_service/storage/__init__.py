"""Persistence: tables, engine setup, migrations and query functions. No Flask here."""
