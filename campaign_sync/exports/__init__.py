"""Exports: store rows into a CSV staging file for every export type (export.py); a big
export's later parts are read by child processes and written in order (parts.py)."""
