"""HTTP blueprints, one per resource. Views translate HTTP to calls and back; no SQL here."""

from webhook_service.api.console import bp as console_bp
from webhook_service.api.docs import bp as openapi_bp
from webhook_service.api.docs import docs_bp
from webhook_service.api.feed import bp as feed_bp
from webhook_service.api.health import bp as health_bp
from webhook_service.api.messages import bp as messages_bp
from webhook_service.api.stats import bp as stats_bp
from webhook_service.api.webhook import bp as webhook_bp

blueprints = (webhook_bp, messages_bp, feed_bp, stats_bp, health_bp, openapi_bp, docs_bp, console_bp)
# The blueprints that API_TOKENS protects: stored messages, the feed and their statistics.
read_blueprints = (messages_bp, feed_bp, stats_bp)
