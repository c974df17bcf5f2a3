"""The HTTP front door (aiohttp)."""
