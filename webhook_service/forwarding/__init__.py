"""The forwarder: delivers every stored message to the consumers of a TOML file, signed,
retried, dead-lettered and replayable. It reads the database, never the HTTP API."""
