"""Test doubles, conformance suites and chaos harnesses shipped with autonomic for its users."""
