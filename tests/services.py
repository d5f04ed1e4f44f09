"""Fixtures that start real services on free loopback ports."""
