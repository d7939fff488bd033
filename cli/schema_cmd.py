"""`campaign-sync schema`: the config file's JSON Schema, for editors that validate YAML.

Only click is imported at startup; the schema is built when the command runs.
"""

from __future__ import annotations

import click


@click.command("schema")
def schema_command() -> None:
    """Print the config file's JSON Schema (draft 2020-12) for editor validation."""
    import json

    from campaign_sync.config.schema import config_schema

    click.echo(json.dumps(config_schema(), indent=2))
