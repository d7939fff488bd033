"""The OpenAPI 3.1 document of the HTTP service (`GET /api/openapi.json`).

Built for the loaded config: the job names a path or parameter takes are the configured
ones (an enum), and the bearer scheme is declared only when `serve.token` is set, so the
document says exactly what this service accepts and answers. The response schemas are the
documents of list-jobs, history and lists (tests run schemathesis against the live service).
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config.model import JOB_TYPES, Config
from ..ops.metrics import JOB_STATES, LIST_STATUSES, RUN_STATUSES

PATH = "/api/openapi.json"
MAX_LIMIT = 1000

Schema = dict[str, Any]


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], description: str = "") -> Schema:
    """An object with exactly these keys, all present (the documents never omit one)."""
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


TEXT: Schema = {"type": "string"}
STAMP: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601"}
COUNT: Schema = {"type": "integer", "minimum": 0}


def schemas() -> dict[str, Schema]:
    return {
        "Error": _object({"error": TEXT}, "what was wrong, in one sentence; never store data"),
        "Health": _object({"status": {"enum": ["ok", "unavailable"]}}),
        "File": _object({"path": TEXT, "bytes": COUNT, "sha256": TEXT}),
        "Run": _object(
            {
                "job": TEXT,
                "type": {"enum": list(JOB_TYPES)},
                "run_id": {"type": "integer"},
                "status": {"enum": list(RUN_STATUSES)},
                "pid": _nullable({"type": "integer"}),
                "host": _nullable(TEXT),
                "started": STAMP,
                "finished": _nullable(STAMP),
                "duration_seconds": _nullable({"type": "number"}),
                "file": _nullable(_ref("File")),
                "counts": {"type": "object", "additionalProperties": COUNT},
                "rejects_file": _nullable(TEXT),
                "error": _nullable(TEXT),
                "message": _nullable(TEXT),
                "warnings": {"type": "array", "items": TEXT},
            },
            "a run, as `history --json` prints it",
        ),
        "Running": _object(
            {
                "run_id": {"type": "integer"},
                "host": _nullable(TEXT),
                "pid": _nullable({"type": "integer"}),
                "started": STAMP,
                "elapsed_seconds": {"type": "number"},
            },
            "the run in progress",
        ),
        "Job": _object(
            {
                "name": TEXT,
                "type": {"enum": list(JOB_TYPES)},
                "list": _nullable(TEXT),
                "schedule": _nullable(TEXT),
                "next_run": _nullable(STAMP),
                "state": {"enum": list(JOB_STATES)},
                "running": _nullable(_ref("Running")),
                "last_run": _nullable(_ref("Run")),
            },
            "a configured job, as `list-jobs --json` prints it",
        ),
        "JobDetail": _object({"job": _ref("Job"), "runs": {"type": "array", "items": _ref("Run")}}),
        "ListCounts": _object(
            {"list": TEXT, **{status: COUNT for status in LIST_STATUSES}},
            "a list's members by status, as `lists --json` prints it",
        ),
    }


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


def _array(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


def _limit(default: int) -> Schema:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "how many runs, newest first",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default},
    }


def _job_name(config: Config) -> Schema:
    names = list(config.jobs)
    return {"type": "string", "enum": names} if names else {"type": "string"}


def _get(
    summary: str,
    ok: Schema,
    *,
    parameters: list[Schema] | None = None,
    errors: dict[str, Schema] | None = None,
    secured: bool,
) -> Schema:
    responses: dict[str, Schema] = {"200": ok}
    responses |= errors or {}
    if parameters is not None:
        responses["400"] = _error("a parameter the path does not take, or a value out of range")
    if secured:
        responses["401"] = {
            **_error("no token, or a wrong one"),
            "headers": {"WWW-Authenticate": {"schema": TEXT}},
        }
    responses["503"] = _error("the store cannot be read now")
    operation: Schema = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if not secured:
        operation["security"] = []
    return {"get": operation}


def document(config: Config) -> Schema:
    """The OpenAPI document for the service of `config`."""
    secured = config.serve.token is not None
    run_filters = [
        {
            "name": "job",
            "in": "query",
            "required": False,
            "description": "only this job's runs",
            "schema": _job_name(config),
        },
        {
            "name": "status",
            "in": "query",
            "required": False,
            "description": "only runs with this status",
            "schema": {"enum": list(RUN_STATUSES)},
        },
        _limit(20),
    ]
    name = {"name": "name", "in": "path", "required": True, "schema": _job_name(config)}
    paths = {
        "/api/jobs/configured": _get(
            "Configured jobs (list-jobs --json)", _json(_array("Job"), "every job"),
            parameters=[], secured=secured,
        ),
        "/api/jobs/running": _get(
            "Running jobs (list-jobs --running --json)",
            _json(_array("Job"), "the jobs running now"), parameters=[], secured=secured,
        ),
        "/api/jobs/{name}": _get(
            "One job and its recent runs", _json(_ref("JobDetail"), "the job"),
            parameters=[name, _limit(20)],
            errors={"404": _error("no job of that name is configured")}, secured=secured,
        ),
        "/api/runs": _get(
            "Run history, newest first (history --json)", _json(_array("Run"), "the runs"),
            parameters=run_filters, secured=secured,
        ),
        "/api/lists": _get(
            "Members per list and status (lists --json)",
            _json(_array("ListCounts"), "every list"), parameters=[], secured=secured,
        ),
        "/metrics": _get(
            "Prometheus metrics (campaign-sync metrics)",
            {
                "description": "the Prometheus text format",
                "content": {"text/plain": {"schema": TEXT}},
            },
            parameters=[], secured=secured,
        ),
        "/healthz": _get(
            "Whether the service can read the store (no token needed)",
            _json(_ref("Health"), "it can"), secured=False,
        ),
        PATH: _get(
            "This document (no token needed)",
            _json({"type": "object"}, "the OpenAPI document"), secured=False,
        ),
        "/": _get(
            "The status page",
            {"description": "an HTML page", "content": {"text/html": {"schema": TEXT}}},
            secured=secured,
        ),
    }  # fmt: skip
    del paths[PATH]["get"]["responses"]["503"]  # built from the config alone
    paths["/healthz"]["get"]["responses"]["503"] = _json(_ref("Health"), "it cannot")
    result: Schema = {
        "openapi": "3.1.0",
        "info": {
            "title": "campaign-sync",
            "version": __version__,
            "description": "Read-only status of campaign-sync's jobs, runs and lists.",
        },
        "paths": paths,
        "components": {"schemas": schemas()},
    }
    if secured:
        result["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        result["security"] = [{"bearer": []}]
    return result
