"""Checking `jobs` entries: type, schedule, source and target, columns, defaults, fields and
the CSV format."""

from __future__ import annotations

import datetime
from typing import Any

from .checks import (
    RATE_RANGE,
    kind_of,
)
from .model import (
    BOUNCE_TYPES,
    DATE_FIELD,
    EXPORT_TYPES,
    FIELD_NAME,
    FILE_FIELDS,
    IMPORT_MODES,
    IMPORT_TYPES,
    JOB_TYPES,
    LIST_JOB_TYPES,
    REQUIRED_FIELDS,
    RESERVED_FIELDS,
    CsvFormat,
    JobConfig,
    ServerConfig,
    SmtpConfig,
    SourceConfig,
    TargetConfig,
)
from .validate_pgp import SOURCE_PACKING_KEYS, TARGET_PACKING_KEYS, PgpChecks

# A fixed date used only to check that a path's placeholders render.
_SAMPLE_DATE = datetime.date(2000, 1, 31)


class JobChecks(PgpChecks):
    def csv_format(self, raw: Any, key: str, *, imports: bool = False) -> CsvFormat:
        allowed = ("delimiter", "quotechar", "encoding", "date_format")
        spec = self.mapping(raw, key, allowed + (("header",) if imports else ()))
        fmt = CsvFormat()
        delimiter = spec.get("delimiter", fmt.delimiter)
        if delimiter == "\\t":
            delimiter = "\t"
        quotechar = spec.get("quotechar", fmt.quotechar)
        for name, value in (("delimiter", delimiter), ("quotechar", quotechar)):
            if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
                raise self.fail(f"{key}.{name}", f"expected one character, got {value!r}")
        if delimiter == quotechar:
            raise self.fail(f"{key}.quotechar", "must differ from the delimiter")
        encoding = self.string(spec.get("encoding", fmt.encoding), f"{key}.encoding")
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise self.fail(f"{key}.encoding", f"unknown encoding '{encoding}'") from None
        date_format = None
        if spec.get("date_format") is not None:
            date_format = self.string(spec["date_format"], f"{key}.date_format")
        header = self.boolean(spec.get("header", True), f"{key}.header")
        return CsvFormat(delimiter, quotechar, encoding, date_format, header)

    def job(
        self,
        name: str,
        raw: Any,
        declared: dict[str, Any],
        servers: dict[str, ServerConfig],
        smtp: SmtpConfig | None,
    ) -> JobConfig:
        key = f"jobs.{name}"
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a mapping, got {kind_of(raw)}")
        kind = self.string(raw.get("type"), f"{key}.type", choices=JOB_TYPES)
        common = ("type", "list", "schedule", "notify")
        allowed: tuple[str, ...]
        if kind in IMPORT_TYPES:
            allowed = common + ("source", "format", "columns", "defaults", "mode", "max_rejects")
            allowed += ("max_removals",)
        elif kind in EXPORT_TYPES:
            allowed = common + ("target", "format", "fields", "include", "changes_only")
        else:
            allowed = common + ("mailings", "rate")
        spec = self.mapping(raw, key, allowed)

        values: dict[str, Any] = {"name": name, "type": kind}
        if kind in LIST_JOB_TYPES or spec.get("list") is not None:
            if spec.get("list") is None:
                raise self.fail(f"{key}.list", f"required for a {kind} job")
            values["list"] = self.string(spec["list"], f"{key}.list")
        if spec.get("schedule") is not None:
            self.settle(
                values, "schedule", lambda: self.schedule(spec["schedule"], f"{key}.schedule")
            )
        if spec.get("notify") is not None:
            values.update(self.job_notify(spec["notify"], f"{key}.notify"))
        if "format" in spec:
            imports = kind in IMPORT_TYPES
            self.settle(
                values,
                "format",
                lambda: self.csv_format(spec["format"], f"{key}.format", imports=imports),
            )

        if kind in IMPORT_TYPES:
            # (a format with a problem: what it would say is unknown, so it is not assumed)
            fmt = values.get("format", CsvFormat() if "format" not in spec else None)
            values.update(self.import_settings(key, spec, declared, fmt))
        elif kind in EXPORT_TYPES:
            values.update(self.export_settings(key, spec, declared))
        else:
            if spec.get("mailings") is None:
                raise self.fail(f"{key}.mailings", "required for a doi-dispatch job")
            values["mailings"] = self.local_path(spec["mailings"], f"{key}.mailings")
            if spec.get("rate") is not None:
                low, high = RATE_RANGE
                values["rate"] = self.number(spec["rate"], f"{key}.rate", minimum=low, maximum=high)
            if smtp is None:
                raise self.fail("smtp", f"required by the doi-dispatch job '{name}'")
        return JobConfig(**values)

    def job_notify(self, raw: Any, key: str) -> dict[str, Any]:
        """A job's own notice targets, added to the global ones: a list of addresses (the
        short form), or a mapping with `to` (addresses) and `urls` (Apprise URLs)."""
        values: dict[str, Any] = {}
        if not isinstance(raw, dict):
            self.settle(values, "notify", lambda: self.addresses(raw, key))
            return values
        spec = self.mapping(raw, key, ("to", "urls"))
        if spec.get("to") is not None:
            self.settle(values, "notify", lambda: self.addresses(spec["to"], f"{key}.to"))
        if spec.get("urls") is not None:
            self.settle(
                values, "notify_urls", lambda: self.apprise_urls(spec["urls"], f"{key}.urls")
            )
        return values

    def apprise_urls(self, value: Any, key: str) -> tuple[str, ...]:
        """Apprise URLs; a problem names the URL by its key, never by its text (a token).

        Whether Apprise knows each URL is asked only by `campaign-sync validate` (when
        collecting): loading Apprise is too slow for every command that reads the config.
        """
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of Apprise URLs, got {kind_of(value)}")
        from . import apprise_urls

        if value and not apprise_urls.installed():
            # Said once, at the first key that uses URLs, however many do.
            if getattr(self, "_apprise_missing_told", False):
                return ()
            self._apprise_missing_told = True
            raise self.fail(
                key, f"Apprise URLs need the Apprise package; {apprise_urls.INSTALL_HINT}"
            )
        urls: list[str] = []
        for i, item in enumerate(value):
            url = self.attempt(lambda i=i, item=item: self.apprise_url(item, f"{key}[{i}]"))
            if url is not None:
                urls.append(url)
        return tuple(urls)

    def apprise_url(self, value: Any, key: str) -> str:
        from . import apprise_urls

        url = self.string(value, key)
        problem = apprise_urls.shape_problem(url)
        if problem is None and self.collected is not None:
            problem = apprise_urls.recognised(url)
        if problem is not None:
            raise self.fail(key, problem)
        return url

    def schedule(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        from ..core.schedule import ScheduleError, parse

        try:
            return parse(text).text  # normalised: "WEEKLY Mon, Thu 06:00" → "weekly mon,thu 06:00"
        except ScheduleError as exc:
            raise self.fail(key, str(exc)) from None

    def server_ref(self, value: Any, key: str, servers: dict[str, Any]) -> str:
        name = self.string(value, key)
        if name not in servers:
            known = ", ".join(sorted(servers)) or "none configured"
            raise self.fail(key, f"no server named '{name}' (servers: {known})")
        return name

    def remote_path(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            from ..core.path_templates import render

            render(text, _SAMPLE_DATE)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        return text

    def import_settings(
        self, key: str, spec: dict[str, Any], servers: dict[str, Any], fmt: CsvFormat | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        kind = spec["type"]
        if spec.get("source") is not None:
            self.settle(values, "source", lambda: self.source(f"{key}.source", spec, servers))
        header = None if fmt is None else fmt.header
        if spec.get("columns") is not None:
            raw = spec["columns"]
            self.settle(
                values,
                "column_fields" if isinstance(raw, list) else "columns",
                lambda: self.columns(f"{key}.columns", raw, kind, header),
            )
        elif header is False:
            self.note(
                self.fail(
                    f"{key}.columns",
                    "required when format.header is false: a list with the field of each "
                    "column, ~ to skip one (e.g. columns: [email, first_name, ~, last_name])",
                )
            )
        if spec.get("defaults") is not None:
            self.settle(
                values,
                "defaults",
                lambda: self.defaults(f"{key}.defaults", spec["defaults"], kind, fmt),
            )
        # What columns and defaults give together, unless one of them had a problem.
        columns_lost = spec.get("columns") is not None and not (
            {"columns", "column_fields"} & set(values)
        )
        defaults_lost = spec.get("defaults") is not None and "defaults" not in values
        if not (columns_lost or defaults_lost):
            self.attempt(lambda: self.provided(f"{key}.columns", kind, values))
        if spec.get("mode") is not None:
            self.settle(
                values,
                "mode",
                lambda: self.string(spec["mode"], f"{key}.mode", choices=IMPORT_MODES),
            )
        if spec["type"] in ("unsubscriber-import", "bounce-import") and values.get(
            "mode", "upsert"
        ) not in ("upsert", "add-only"):
            self.note(self.fail(f"{key}.mode", f"a {spec['type']} job only adds (mode upsert)"))
        for limit in ("max_rejects", "max_removals"):
            if spec.get(limit) is not None:
                self.settle(values, limit, lambda n=limit: self.limit(spec[n], f"{key}.{n}"))
        return values

    def source(self, skey: str, spec: dict[str, Any], servers: dict[str, Any]) -> SourceConfig:
        src = self.mapping(
            spec["source"],
            skey,
            ("server", "path", "missing", "after", "archive_dir", "on_error") + SOURCE_PACKING_KEYS,
        )
        for required in ("server", "path"):
            if required not in src:
                raise self.fail(f"{skey}.{required}", "required")
        after = self.string(
            src.get("after", "keep"), f"{skey}.after", choices=("keep", "delete", "archive")
        )
        archive_dir = None
        if after == "archive":
            if not src.get("archive_dir"):
                raise self.fail(f"{skey}.archive_dir", "required when after is archive")
            archive_dir = self.string(src["archive_dir"], f"{skey}.archive_dir")
        # Each key checked on its own (attempt), so validate reports all of them.
        return SourceConfig(
            server=self.attempt(lambda: self.server_ref(src["server"], f"{skey}.server", servers)),
            path=self.attempt(lambda: self.source_path(src["path"], f"{skey}.path")),
            missing=self.attempt(
                lambda: self.string(
                    src.get("missing", "fail"), f"{skey}.missing", choices=("fail", "skip")
                )
            ),
            after=after,
            archive_dir=archive_dir,
            on_error=self.attempt(
                lambda: self.string(
                    src.get("on_error", "stop"), f"{skey}.on_error", choices=("stop", "continue")
                )
            ),
            **self.source_packing(skey, src),
        )

    def source_path(self, value: Any, key: str) -> str:
        """A remote path whose file name may be a pattern; its folders may not."""
        text = self.remote_path(value, key)
        from ..core.name_patterns import name_pattern
        from ..core.path_templates import render

        try:
            name_pattern(render(text, _SAMPLE_DATE))
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        return text

    def columns(
        self, ckey: str, columns: Any, kind: str, header: bool | None
    ) -> dict[str, str] | tuple[str | None, ...] | None:
        """A mapping header: field (files with a header line) or a list of fields (files
        without); None when (collecting) one of its entries had a problem."""
        if isinstance(columns, list):
            if header:
                raise self.fail(
                    ckey,
                    "a list of columns is for a file without a header line: set format.header: "
                    "false, or map the header's names (e.g. columns: {E-Mail: email})",
                )
            return self.column_list(ckey, columns, kind)
        if not isinstance(columns, dict):
            raise self.fail(
                ckey,
                "expected a mapping of header: field (or, with format.header: false, a list "
                f"of fields), got {kind_of(columns)}",
            )
        if header is False:
            raise self.fail(
                ckey,
                "format.header is false, so there are no header names to map: give a list "
                "with the field of each column, ~ to skip one (e.g. columns: [email, ~, city])",
            )
        mapped: dict[str, str] = {}
        headers: dict[str, str] = {}  # as matched (case and outer spaces ignored): as written
        sources: dict[str, str] = {}  # field: the header giving it
        for name, target in columns.items():
            hkey, name = f"{ckey}.{name}", str(name)
            field_name = self.attempt(lambda h=hkey, t=target: self.field_target(h, t, kind))
            same = headers.setdefault(name.strip().lower(), name)
            if same != name:
                self.note(
                    self.fail(
                        hkey,
                        f"'{name}' and '{same}' are the same header (headers match whatever "
                        "their case and outer spaces); keep one",
                    )
                )
            elif field_name is not None and sources.setdefault(field_name, name) != name:
                self.note(
                    self.fail(
                        hkey,
                        f"'{name}' and '{sources[field_name]}' both give the field "
                        f"'{field_name}'; map only one of them",
                    )
                )
            else:
                mapped[name] = field_name
        if len(mapped) < len(columns) or None in mapped.values():
            return None
        return mapped

    def column_list(
        self, ckey: str, columns: list[Any], kind: str
    ) -> tuple[str | None, ...] | None:
        """The field of each column of a file without a header line; ~ (None) skips one."""
        fields: list[str | None] = []
        first: dict[str, int] = {}
        for i, target in enumerate(columns):
            if target is None:
                fields.append(None)
                continue
            field_name = self.attempt(
                lambda k=f"{ckey}[{i}]", t=target: self.field_target(k, t, kind)
            )
            if field_name is not None and first.setdefault(field_name, i) != i:
                self.note(
                    self.fail(
                        f"{ckey}[{i}]",
                        f"'{field_name}' is already the field of column {first[field_name] + 1}; "
                        "a field comes from one column (~ skips a column)",
                    )
                )
                field_name = None
            fields.append(field_name if field_name is not None else "")
        if "" in fields:
            return None
        return tuple(fields)

    def field_target(self, key: str, value: Any, kind: str) -> str:
        """A field an import of this kind may take from a file (or a default)."""
        name = self.string(value, key)
        if not FIELD_NAME.match(name):
            raise self.fail(key, f"'{name}' is not a field name (lower-case letters, digits, _)")
        known = FILE_FIELDS.get(kind)
        if known is None and name in RESERVED_FIELDS:
            raise self.fail(
                key,
                f"'{name}' is managed by campaign-sync, not by an import; use another name",
            )
        if known is not None and name not in known:
            raise self.fail(key, f"a {kind} job knows the fields {', '.join(known)}, not '{name}'")
        return name

    def defaults(
        self, dkey: str, raw: Any, kind: str, fmt: CsvFormat | None
    ) -> dict[str, str] | None:
        """Each field's value where the file has no such column or the cell is empty,
        checked as a cell of the file would be; None when (collecting) one had a problem."""
        if not isinstance(raw, dict):
            raise self.fail(dkey, f"expected a mapping of field: value, got {kind_of(raw)}")
        values: dict[str, str] = {}
        for name, value in raw.items():
            checked = self.attempt(
                lambda k=f"{dkey}.{name}", n=name, v=value: self.default(k, n, v, kind, fmt)
            )
            if checked is not None:
                values[str(name)] = checked
        return values if len(values) == len(raw) else None

    def default(self, key: str, name: Any, value: Any, kind: str, fmt: CsvFormat | None) -> str:
        field_name = self.field_target(key, name, kind)
        if field_name == REQUIRED_FIELDS[kind][0]:
            raise self.fail(key, f"'{field_name}' identifies each row; it cannot have a default")
        if isinstance(value, datetime.date):  # YAML reads 2024-05-01 as a date
            value = value.isoformat()
        if isinstance(value, bool):  # YAML reads yes, no, on, off as true/false
            raise self.fail(key, "expected text or a number, got true/false; put it in quotes")
        text = self.string(value, key).strip()
        if field_name == "type" and kind == "bounce-import":
            text = text.lower()
            if text not in BOUNCE_TYPES:
                raise self.fail(key, f"'{text}' is not a bounce type (hard or soft)")
        if field_name == DATE_FIELD.get(kind) and fmt is not None:
            self.date_value(key, text, fmt.date_format)
        return text

    def date_value(self, key: str, text: str, date_format: str | None) -> None:
        """`text` must read as a date the way the file's cells are read."""
        from ..core.dates import parse_date

        try:
            parse_date(text, date_format, datetime.timezone.utc)
        except (ValueError, OverflowError):
            if date_format:
                raise self.fail(
                    key, f"'{text}' is not a date in the job's format.date_format {date_format}"
                ) from None
            raise self.fail(
                key, f"'{text}' is not an ISO 8601 date (e.g. 2024-05-01 or 2024-05-01T10:00)"
            ) from None

    def provided(self, ckey: str, kind: str, values: dict[str, Any]) -> None:
        """Configured columns must give each field an import needs, or defaults must."""
        if "columns" in values:
            mapped: dict[str, str] = values["columns"]
            given = set(mapped.values())
            shown = "columns map " + ", ".join(f"{h} → {f}" for h, f in mapped.items())
        elif "column_fields" in values:
            listed: tuple[str | None, ...] = values["column_fields"]
            given = {field for field in listed if field is not None}
            shown = "columns list " + ", ".join(f or "~" for f in listed)
        else:
            return  # the file's header names the fields: known only when it is read
        for needed in REQUIRED_FIELDS[kind]:
            if needed not in given and needed not in values.get("defaults", {}):
                raise self.fail(
                    ckey,
                    f"no column gives '{needed}' ({shown}); {_column_hint(needed, kind, values)}",
                )

    def export_settings(
        self, key: str, spec: dict[str, Any], servers: dict[str, Any]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        self.settle(values, "target", lambda: self.target(f"{key}.target", spec, servers))
        if spec.get("fields") is not None:
            self.settle(values, "fields", lambda: self.fields(f"{key}.fields", spec["fields"]))
        if spec.get("include") is not None:
            self.settle(
                values,
                "include",
                lambda: self.string(spec["include"], f"{key}.include", choices=("active", "all")),
            )
        if spec.get("changes_only") is not None:
            self.settle(
                values,
                "changes_only",
                lambda: self.boolean(spec["changes_only"], f"{key}.changes_only"),
            )
        return values

    def target(self, tkey: str, spec: dict[str, Any], servers: dict[str, Any]) -> TargetConfig:
        if spec.get("target") is None:
            raise self.fail(tkey, "required for an export job")
        tgt = self.mapping(spec["target"], tkey, ("server", "path", "atomic") + TARGET_PACKING_KEYS)
        for required in ("server", "path"):
            if required not in tgt:
                raise self.fail(f"{tkey}.{required}", "required")
        return TargetConfig(
            server=self.attempt(lambda: self.server_ref(tgt["server"], f"{tkey}.server", servers)),
            path=self.attempt(lambda: self.remote_path(tgt["path"], f"{tkey}.path")),
            atomic=self.attempt(lambda: self.boolean(tgt.get("atomic", True), f"{tkey}.atomic")),
            **self.target_packing(tkey, tgt),
        )

    def fields(self, fkey: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(fkey, "expected a non-empty list of field names")
        names = []
        for i, item in enumerate(value):
            field_name = self.string(item, f"{fkey}[{i}]")
            if not FIELD_NAME.match(field_name):
                raise self.fail(f"{fkey}[{i}]", f"'{field_name}' is not a field name")
            names.append(field_name)
        return tuple(names)


def _column_hint(needed: str, kind: str, values: dict[str, Any]) -> str:
    """What to add to a job's columns (or defaults) to give the field `needed`."""
    if "columns" in values:
        header = "E-Mail" if needed == "email" else needed.capitalize()
        pairs = [f"{header}: {needed}", *(f"{h}: {f}" for h, f in values["columns"].items())]
        hint = (
            "with columns, only mapped headers are read: map the file's one too, e.g. "
            f"columns: {{{', '.join(pairs)}}}"
        )
    else:
        fields = [needed, *(f or "~" for f in values["column_fields"])]
        hint = f"name the column that holds it in the list, e.g. columns: [{', '.join(fields)}]"
    if needed != REQUIRED_FIELDS[kind][0]:  # (the field identifying a row has no default)
        hint += f", or defaults: {{{needed}: …}}"
    return hint
