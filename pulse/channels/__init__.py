"""Delivery channels: plugins behind ``pulse.ports.Channel``; none knows Redis or PostgreSQL."""
