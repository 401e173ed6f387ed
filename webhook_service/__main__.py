"""`python -m webhook_service`: the operator's command line."""

from webhook_service.cli import main

main()
