"""The alembic migrations of the service, shipped inside the package as webhook_service.migrations."""
