"""Ports: the interfaces the engine needs from the outside world. Adapters implement them."""
