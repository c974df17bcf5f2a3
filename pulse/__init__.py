"""Pulse: a notification and background-job service."""

__version__ = "0.1.0"
