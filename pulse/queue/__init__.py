"""Redis Streams adapter: the work to do, rebuildable from PostgreSQL."""
