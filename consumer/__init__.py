"""The data plane: read a consumer group, decode, sink, ack, dead-letter, metrics, health."""
