"""The ``autonomic`` command line."""
