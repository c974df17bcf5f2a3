"""PostgreSQL adapter (asyncpg): the system of record."""
