"""The SQLite store backend: each concern's SQL in its own module (staging, recipients, …)."""
