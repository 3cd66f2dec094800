"""The pure domain of autonomic: runs, journal entries and the fold that turns one into the other.

Nothing in this package does I/O or touches asyncio; an architecture test keeps it that way.
"""
