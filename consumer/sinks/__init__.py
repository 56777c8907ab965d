"""Where decoded messages go: a SQL table (PostgreSQL or SQLite) or a Python handler."""
