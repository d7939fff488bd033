"""The checks every part of the validation shares: scalars, limits, and collecting every
problem (for `validate`) instead of stopping at the first."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .model import (
    Limit,
)

# The ranges numbers must lie in (docs/configuration.md); every number is finite as well.
TIMEOUT_RANGE = (0.1, 3600.0)  # seconds: ssh, smtp, webhook
RATE_RANGE = (0.001, 1000.0)  # messages per second
BOUNCE_LIMIT_RANGE = (1, 1000)
MAX_LIMIT_COUNT = 1_000_000_000  # max_rejects / max_removals as a count of rows
RETENTION_DAYS_RANGE = (1, 36500)  # retention.runs / retention.rejects, in days
DAYS = re.compile(r"\s*([0-9]{1,9})\s*d\s*")


def join_key(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


class Checks:
    """The validator's state (the file, its folder, problems collected) and its
    primitive checks; ServerChecks, JobChecks and Validator build on them."""

    def __init__(self, path: Path, *, collect: bool = False):
        self.path = path
        self.base = path.resolve().parent
        self.collected: list[str] | None = [] if collect else None

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=str(self.path), key=key)

    # -- scalar helpers ------------------------------------------------------------

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {kind_of(value)}")
        unknown = [k for k in value if k not in allowed]
        for k in unknown:
            self.note(
                self.fail(join_key(key, k), f"unknown key (allowed here: {', '.join(allowed)})")
            )
        return {k: v for k, v in value.items() if k not in unknown}

    def string(self, value: Any, key: str, *, choices: tuple[str, ...] = ()) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"expected a string, got {kind_of(value)}")
        text = str(value)
        if choices and text not in choices:
            raise self.fail(key, f"'{text}' is not one of: {', '.join(choices)}")
        if not text.strip():
            raise self.fail(key, "must not be empty")
        return text

    def integer(self, value: Any, key: str, *, minimum: int = 0, maximum: int = 2**31) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,30}\s*", value):
            value = int(value)  # an interpolated ${PORT} arrives as text
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, got {kind_of(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{short(value)} is out of range ({minimum}..{maximum})")
        return value

    def number(self, value: Any, key: str, *, minimum: float = 0.0, maximum: float = 1e9) -> float:
        """A finite number within [minimum, maximum]: NaN and infinity (`.nan`, `.inf`,
        `1.0e999`, an interpolated "nan") are refused like any other value out of range."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.fail(key, f"expected a number, got '{value}'") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {kind_of(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{short(value)} is out of range ({minimum:g}..{maximum:g})")
        return float(value)

    def timeout(self, value: Any, key: str) -> float:
        return self.number(value, key, minimum=TIMEOUT_RANGE[0], maximum=TIMEOUT_RANGE[1])

    def bounce_limit(self, value: Any, key: str) -> int:
        low, high = BOUNCE_LIMIT_RANGE
        return self.integer(value, key, minimum=low, maximum=high)

    def days(self, value: Any, key: str) -> int:
        """A duration in whole days, written `30d`: a bare number could be read as hours
        or seconds, so the unit is required."""
        found = DAYS.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            if isinstance(value, int) and not isinstance(value, bool):
                shown = f"{short(value)} without a unit (write {short(value)}d)"
            else:
                shown = f"'{value}'" if isinstance(value, str) else kind_of(value)
            raise self.fail(key, f"expected a number of days like 30d, got {shown}")
        number = int(found.group(1))
        low, high = RETENTION_DAYS_RANGE
        if not low <= number <= high:
            raise self.fail(key, f"{number}d is out of range ({low}d..{high}d)")
        return number

    def boolean(self, value: Any, key: str) -> bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {kind_of(value)}")
        return value

    def secret(self, value: Any, key: str) -> str | None:
        """A password or passphrase: text only. YAML would turn `0123` into 83, silently."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected text, got {kind_of(value)}; put it in quotes")
        return value

    def local_path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    def addresses(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of addresses, got {kind_of(value)}")
        out = []
        for i, item in enumerate(value):
            address = self.string(item, f"{key}[{i}]")
            if "@" not in address:
                raise self.fail(f"{key}[{i}]", f"'{address}' is not an email address")
            out.append(address)
        return tuple(out)

    def limit(self, value: Any, key: str) -> Limit:
        text = str(value).strip() if not isinstance(value, bool) else ""
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
        if not match:
            raise self.fail(key, f"expected a count or a percentage like 1%, got {value!r}")
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent and number > 100:
            raise self.fail(key, f"{text} is more than 100%")
        if not percent and number > MAX_LIMIT_COUNT:
            raise self.fail(key, f"a count must be at most {MAX_LIMIT_COUNT} (or a percentage)")
        return Limit(number, percent)

    # -- sections -----------------------------------------------------------------

    def attempt(self, build: Any, default: Any = None) -> Any:
        """Run one section's validation; when collecting, note its problem and go on."""
        if self.collected is None:
            return build()
        try:
            return build()
        except ConfigError as exc:
            self.collected.append(str(exc))
            return default

    def note(self, problem: ConfigError) -> None:
        """Raise the problem; when collecting, note it and go on."""
        if self.collected is None:
            raise problem
        self.collected.append(str(problem))

    def settle(self, values: dict[str, Any], name: str, build: Any) -> None:
        """values[name] = build(), unless (when collecting) it had a problem: then it is
        noted and the key left unset, so the checks after it see no made-up value."""
        value = self.attempt(build)
        if value is not None:
            values[name] = value


def short(value: Any) -> str:
    """A number for a message; one pasted with hundreds of digits is not quoted in full."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else f"a number of {len(text)} digits"


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "true/false", str: "text"}.get(
        type(value), type(value).__name__
    )
