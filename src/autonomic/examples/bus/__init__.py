"""Two agents talking over the event bus: a code analyzer hands work to a security auditor."""
