"""The operator's command line: `webhook-service` (or `python -m webhook_service`).

Every command reads the same environment as the server, prints one clear line and exits
non-zero on bad input or failure, and works while the server runs. One module per concern
registers its commands on the group.
"""

from webhook_service.cli import database, forwarding, lifecycle, serving, signing  # noqa: F401 - registers commands
from webhook_service.cli.common import main

__all__ = ["main"]
