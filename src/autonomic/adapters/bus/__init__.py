"""Event-bus adapters: the embedded SQL bus and Kafka (``autonomic.ports.bus``)."""
