"""Configuration: load → interpolate → normalise → validate, in one pipeline.

Every problem is a ConfigError naming the file and the key path (``At 'jobs.x.source': …``).
The result is a tree of frozen dataclasses (model.py); nothing downstream looks at raw YAML.
load.py reads and interpolates; validate.py, validate_servers.py and validate_jobs.py
check; redact.py knows which values are secrets.
"""

from .load import load, locate, problems

__all__ = ["load", "locate", "problems"]
