"""Event-bus adapters: the embedded SQL bus (``sql.py``); Kafka (``kafka.py``)."""
