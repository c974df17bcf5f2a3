"""Delivery channels: plugins behind ``pulse.core.ports.Channel``; none knows Redis or
PostgreSQL."""
