"""The worker runtime: small asyncio actors under a supervisor."""
