"""Database plumbing: the hot prepared cursor, the PostgreSQL backend, the shared Redis client."""
