"""Locust load tests of Pulse through its public API (``make loadtest``; see loadtest/README.md).

The locustfile imports gevent, which patches the standard library: only ``locustfile`` imports
Locust; the other modules are plain Python that the runner and the unit tests may import.
"""
