"""Paths in from other job queues: ``pulse.compat.arq``."""
