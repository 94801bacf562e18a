"""The SQL store for SQLite and PostgreSQL."""
