"""PostgreSQL access: connections, migrations and the SQL statements."""
