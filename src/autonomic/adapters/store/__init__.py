"""Store adapters: SQLite (embedded default) and PostgreSQL (production)."""
