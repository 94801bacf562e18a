"""Adapters: storage and other I/O at the edge of the domains."""
