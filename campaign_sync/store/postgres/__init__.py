"""The PostgreSQL store backend: one store shared by several cron hosts.

Imported only when `store` is a postgresql:// URL; psycopg (the `postgres` extra) is imported
inside, on first use, never by this package's import.
"""
