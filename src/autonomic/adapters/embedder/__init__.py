"""Embedder adapters: hashed character n-grams (the offline default) and all-MiniLM-L6-v2."""
