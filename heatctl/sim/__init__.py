"""Closed-loop simulation: the real control core against plant models, in virtual time."""
