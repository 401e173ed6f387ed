"""The JSON documents the service hands out, shared by the HTTP API and the command line."""

from __future__ import annotations

from webhook_service.storage.messages import MessageStats, StoredMessage


def message_document(message: StoredMessage) -> dict:
    """A stored message in the API's field names."""
    return {
        "message_id": message.message_id,
        "from": message.sender,
        "to": message.recipient,
        "ts": message.ts,
        "text": message.text,
        "created_at": message.created_at,
    }


def stats_document(stats: MessageStats) -> dict:
    """The /stats document."""
    return {
        "total_messages": stats.total_messages,
        "senders_count": stats.senders_count,
        "messages_per_sender": [{"from": sender.sender, "count": sender.count} for sender in stats.top_senders],
        "first_message_ts": stats.first_message_ts,
        "last_message_ts": stats.last_message_ts,
    }
