"""Recipient addresses: normalisation, the syntax check, and blocklist patterns.

Addresses are compared case-insensitively and stored trimmed and lower-cased,
with valid A-labels of the domain decoded so one domain has one stored form (see normalise).
The syntax is RFC 5321/5322 ``dot-atom "@" domain`` with these deliberate limits:

* local parts are ASCII dot-atoms only: quoted local parts (``"a b"@x.de``), comments and
  SMTPUTF8 (non-ASCII) local parts are rejected -- a campaign platform cannot rely on every
  receiving MTA supporting them, and partners' files practically never contain them;
* domains are host names with at least two labels; internationalized domains are accepted in
  U-label (``bücher.de``) or A-label (``xn--bcher-kva.de``) form and checked with IDNA 2008
  (the ``idna`` package); address literals (``user@[192.0.2.1]``) are rejected;
* lengths: 64 octets local part, 63 per domain label, 254 for the whole address, counted on the
  ASCII (A-label) form that goes over the wire;
* the top-level domain is letters only (or an IDN TLD), so ``user@10.0.0.1`` is rejected.

Speed matters (a million rows per import), so :func:`check` first tries one precompiled ASCII
regex that accepts the common case in about a microsecond and only falls back to the careful,
reason-giving check for non-ASCII, ``xn--`` or invalid input.
"""

from __future__ import annotations

import enum
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import contains, not_

import idna

MAX_ADDRESS = 254  # RFC 5321 path limit (256) minus the angle brackets
MAX_LOCAL = 64
MAX_LABEL = 63
MAX_DOMAIN = 253

# RFC 5322 atext, as a character class body.  Upper case is spelled out rather than using
# re.IGNORECASE, which made the fast path twice as slow (0.85 vs 0.45 us per address).
_ATEXT = r"a-zA-Z0-9!#$%&'*+/=?^_`{|}~-"
_LDH_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"

# The fast path: lookahead for the local-part length, dot-atom, LDH labels, an alphabetic TLD.
# Anything this rejects goes to the careful check, which decides and gives the reason.
_FAST = re.compile(
    rf"(?=[^@]{{1,{MAX_LOCAL}}}@)[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
    rf"@(?:{_LDH_LABEL}\.)+[a-zA-Z]{{2,63}}",
    re.ASCII,
)
_ATEXT_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-")
_LDH_RE = re.compile(_LDH_LABEL, re.ASCII)
_TLD_RE = re.compile(r"[a-zA-Z]{2,63}", re.ASCII)


def normalise(raw: str) -> str:
    """The stored form of an address: trimmed, lower-cased, NFC for non-ASCII text, and every
    valid A-label (``xn--…``) of the domain written as its U-label.

    NFC matters for IDN domains: ``bu\\u0308cher.de`` and ``bücher.de`` are the same domain and
    must not become two recipients.  For the same reason ``xn--bcher-kva.de`` becomes
    ``bücher.de``: one domain has one stored form, else the blocklist, unsubscriptions and
    duplicate detection would each see two addresses.  The Unicode form is the canonical one
    (not the A-label) because it is what stores, exports and partners already hold for
    Unicode domains, and all-ASCII addresses -- nearly all -- stay exactly as they were.  An
    ``xn--`` label that is no valid A-label is left as it is, for :func:`check` to reject.
    """
    address = raw.strip()
    if not address.isascii():
        address = unicodedata.normalize("NFC", address)
    address = address.lower()
    if _ACE in address:
        address = _decode_domain(address)
    return address


def normalise_all(raw: list[str]) -> list[str]:
    """:func:`normalise` over a list, in C for the ASCII ones (nearly all).

    A-labels are rare: one scan of the whole batch for ``xn--`` decides whether any row needs
    the per-row decoding at all.
    """
    stripped = list(map(str.strip, raw))
    out = list(map(str.lower, stripped))
    for index in compress(count(), map(not_, map(str.isascii, stripped))):
        out[index] = normalise(raw[index])
    if _ACE in "\n".join(out):
        for index in compress(count(), map(contains, out, repeat(_ACE))):
            out[index] = _decode_domain(out[index])
    return out


_ACE = "xn--"  # the prefix of an A-label (RFC 5890), in the lower case of normalised text


def _decode_domain(address: str) -> str:
    """A lower-cased address with each valid A-label of its domain replaced by its U-label."""
    local, at, domain = address.rpartition("@")
    if not at or _ACE not in domain:
        return address
    labels = domain.split(".")
    for index, label in enumerate(labels):
        if label.startswith(_ACE):
            labels[index] = _ulabel(label) or label
    return f"{local}@{'.'.join(labels)}"


def _ulabel(label: str) -> str | None:
    """The U-label of the A-label ``label`` (lower case), None if it is not a valid one.

    Valid means: canonical punycode of a label that the address check accepts in Unicode and
    that encodes back to exactly ``label``.  Anything else keeps its ``xn--`` spelling, so the
    check (or pattern_problem) rejects it -- or, for the odd label that IDNA 2008 accepts but
    the UTS 46 mapping would rewrite, keeps accepting it as before.
    """
    if len(label) > MAX_LABEL:
        return None
    try:
        unicode_label = idna.ulabel(label)
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    ascii_label, reason = _label_problem(unicode_label)
    if reason or ascii_label != label:
        return None
    return unicode_label


def check(address: str) -> str | None:
    """None if ``address`` is a valid address, else a short reason for the rejects file.

    Expects a normalised address (see :func:`normalise`) but never raises on any string.
    """
    if len(address) <= MAX_ADDRESS and _FAST.fullmatch(address) and "xn--" not in address:
        return None
    return _check_careful(address)


def check_all(addresses: list[str]) -> list[tuple[int, str]]:
    """(index, reason) for each address of the list that :func:`check` rejects, in order.

    The same decisions as :func:`check` one by one, but the common valid addresses are
    decided in C for the whole list (one regex call each, no Python step per address);
    only the others take the careful path.
    """
    suspects: Sequence[int] = list(compress(count(), map(not_, map(_FAST.fullmatch, addresses))))
    if max(map(len, addresses), default=0) > MAX_ADDRESS or "xn--" in "\n".join(addresses):
        suspects = range(len(addresses))  # rare: decide every one exactly as check() does
    found = []
    for index in suspects:
        reason = check(addresses[index])
        if reason is not None:
            found.append((index, reason))
    return found


def _check_careful(address: str) -> str | None:
    """The slow path: decides every input and names the first problem found."""
    if not address:
        return "empty"
    # A U-label is never longer than its A-label, so this bound is safe before any IDNA work
    # and keeps pathological inputs (megabytes in one cell) cheap.
    if len(address) > MAX_ADDRESS:
        return "too long"
    if "@" not in address:
        return "missing @"
    local, _, domain = address.rpartition("@")
    if "@" in local:
        if local.startswith('"'):
            return "invalid local part (quoted local parts are not supported)"
        return "more than one @"
    reason = _local_problem(local)
    if reason:
        return reason
    ascii_domain, reason = _domain_problem(domain)
    if reason:
        return reason
    if len(local) + 1 + len(ascii_domain) > MAX_ADDRESS:
        return "too long"
    return None


def _local_problem(local: str) -> str | None:
    if not local:
        return "invalid local part (empty)"
    if len(local) > MAX_LOCAL:
        return "invalid local part (longer than 64 characters)"
    if local.startswith('"'):
        return "invalid local part (quoted local parts are not supported)"
    if local.startswith(".") or local.endswith("."):
        return "invalid local part (starts or ends with a dot)"
    if ".." in local:
        return "invalid local part (consecutive dots)"
    for char in local:
        if char != "." and char not in _ATEXT_CHARS:
            if not char.isascii():
                return "invalid local part (non-ASCII characters are not supported)"
            return f"invalid local part (character {_show(char)} not allowed)"
    return None


def _domain_problem(domain: str) -> tuple[str, str | None]:
    """(the domain's ASCII form, None) or ("", reason)."""
    if not domain:
        return "", "invalid domain (empty)"
    if domain.startswith("["):
        return "", "invalid domain (address literals are not accepted)"
    labels = domain.split(".")
    if len(labels) < 2:
        return "", "invalid domain (needs at least two labels, e.g. example.com)"
    ascii_labels = []
    for label in labels:
        ascii_label, reason = _label_problem(label)
        if reason:
            return "", reason
        ascii_labels.append(ascii_label)
    tld = ascii_labels[-1]
    if not (_TLD_RE.fullmatch(tld) or tld.lower().startswith("xn--")):
        return "", f"invalid domain (top-level domain {_show(labels[-1])} must be letters)"
    ascii_domain = ".".join(ascii_labels)
    if len(ascii_domain) > MAX_DOMAIN:
        return "", "too long"
    return ascii_domain, None


def _show(text: str) -> str:
    """Quote a piece of the input for a reason, cut short: reasons go into one CSV cell."""
    return repr(text if len(text) <= 24 else text[:24] + "…")


def _label_problem(label: str) -> tuple[str, str | None]:
    """(the label's A-label form, None) or ("", reason)."""
    if not label:
        return "", "invalid domain (empty label: leading, trailing or consecutive dots)"
    if label.isascii():
        if len(label) > MAX_LABEL:
            return "", "invalid domain (label longer than 63 characters)"
        if not _LDH_RE.fullmatch(label):
            return "", f"invalid domain (label {_show(label)}: letters, digits, inner hyphens only)"
        if label[2:4] == "--" and label[:2].lower() == "xn":
            # An A-label must decode to a valid U-label that encodes back to it (canonical
            # punycode; checked here too, since idna releases before 3.20 do not), else it
            # is not a domain at all.
            try:
                canonical = idna.encode(idna.decode(label.lower())).decode("ascii")
            except (idna.IDNAError, UnicodeError, ValueError):
                canonical = ""
            if canonical != label.lower():
                return "", f"invalid domain (label {_show(label)} is not valid IDNA)"
        return label, None
    try:
        # UTS 46 mapping first (case folding, width), then strict IDNA 2008 encoding.
        mapped = idna.uts46_remap(label, std3_rules=True, transitional=False)
        ascii_label = idna.alabel(mapped).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return "", f"invalid domain (label {_show(label)} is not valid IDNA)"
    if mapped != unicodedata.normalize("NFC", label.lower()):
        # Fullwidth letters and the like map to a different label: storing the raw text would
        # make two recipients of one address, and silently rewriting it would surprise.
        return "", f"invalid domain (label {_show(label)} is not in canonical form)"
    if len(ascii_label) > MAX_LABEL:
        return "", "invalid domain (label longer than 63 characters)"
    return ascii_label, None


# --- Blocklist patterns ---------------------------------------------------------------------
#
# A pattern is literal text with `*` (any run of characters, also none), `?` (exactly one
# character) and `\` (the next character is literal).  Patterns and addresses are both
# normalised (trimmed, lower-cased), so matching is case-insensitive, and a pattern must match
# the whole address.


class PatternError(ValueError):
    """A blocklist pattern that cannot be used; the message says why."""


class _Wild(enum.Enum):
    STAR = "*"  # any run of characters, also none
    QMARK = "?"  # exactly one character


STAR = _Wild.STAR
QMARK = _Wild.QMARK
Token = str | _Wild  # literal text or a wildcard


def pattern_problem(pattern: str) -> str | None:
    """None if ``pattern`` is a usable blocklist pattern, else why not (for rejects files).

    Stricter than :class:`Blocklist` in one way: a whole domain label that looks like an
    A-label but is none is an error here (no valid address can have it), while patterns a
    store already holds keep loading.
    """
    try:
        _tokens(pattern, strict=True)
    except PatternError as exc:
        return str(exc)
    return None


def literal_pattern(pattern: str) -> str | None:
    """The one address a pattern without wildcards matches (escapes undone, normalised as
    addresses are); None for a pattern with a wildcard, or one that cannot be read."""
    try:
        tokens = _tokens(pattern)
    except PatternError:
        return None
    if len(tokens) == 1 and isinstance(tokens[0], str):
        return tokens[0]
    return None


def as_pattern(address: str) -> str:
    """The blocklist pattern that matches exactly `address` (its `*`, `?` and `\\` escaped)."""
    return re.sub(r"([*?\\])", r"\\\1", address)


def ascii_form(address: str) -> str:
    """A normalised, valid address with its domain's U-labels written as A-labels (the form
    on the wire, and the one older stores and other writers may hold)."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    labels = [_label_problem(label)[0] or label for label in domain.split(".")]
    return f"{local}@{'.'.join(labels)}"


def pattern_ends(pattern: str) -> tuple[str, str]:
    """The literal text a pattern's matches must start and end with ("" after a wildcard),
    normalised as addresses are, so it can be compared with stored addresses."""
    tokens = _tokens(pattern)
    head, tail = tokens[0], tokens[-1]
    return (head if isinstance(head, str) else ""), (tail if isinstance(tail, str) else "")


def _tokens(pattern: str, *, strict: bool = False) -> list[Token]:
    """Normalised pattern as a list of literal strings, STAR and QMARK, runs merged."""
    text = normalise(pattern)
    if not text:
        raise PatternError("empty pattern")
    tokens: list[Token] = []
    literal: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise PatternError(
                    "pattern ends with a lone backslash; write \\\\ for a literal backslash"
                )
            literal.append(escaped)
            continue
        if char not in "*?":
            literal.append(char)
            continue
        if literal:
            tokens.append("".join(literal))
            literal = []
        # `**` means the same as `*`; collapsing keeps the regex free of needless backtracking.
        if not (char == "*" and tokens and tokens[-1] is STAR):
            tokens.append(STAR if char == "*" else QMARK)
    if literal:
        tokens.append("".join(literal))
    if _ACE in text:
        _decode_pattern_domain(tokens, strict=strict)
    return tokens


def _decode_pattern_domain(tokens: list[Token], *, strict: bool) -> None:
    """Write the whole A-labels of a pattern's domain as U-labels, as :func:`normalise` does
    for addresses, so ``*@xn--bcher-kva.de`` matches ``anna@bücher.de``.

    The domain is what follows the last literal ``@``; without one, only a literal tail after
    a wildcard is surely in the domain (an address ends with its domain).  A label counts
    only when it is whole: bounded by ``@``, ``.`` or the end, never by a wildcard --
    ``xn--bcher*`` is left as it is.  A whole ``xn--`` label that is no valid A-label raises
    PatternError when ``strict``, and is otherwise left as it is (it can match nothing).
    """
    at_index = next(
        (
            i
            for i in range(len(tokens) - 1, -1, -1)
            if isinstance(token := tokens[i], str) and "@" in token
        ),
        None,
    )
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if not isinstance(token, str) or _ACE not in token:
            continue
        if at_index is not None and index == at_index:
            local, _, domain = token.rpartition("@")
            prefix, first_whole = local + "@", True
        elif (at_index is not None and index > at_index) or (
            at_index is None and 0 < index == last
        ):
            domain, prefix, first_whole = token, "", False
        else:
            continue
        labels = domain.split(".")
        for number, label in enumerate(labels):
            whole = (number > 0 or first_whole) and (number < len(labels) - 1 or index == last)
            if whole and label.startswith(_ACE):
                decoded = _ulabel(label)
                if decoded is None and strict:
                    raise PatternError(f"domain label {_show(label)} is not valid IDNA")
                labels[number] = decoded or label
        tokens[index] = prefix + ".".join(labels)


def _regex_source(tokens: list[Token], first_group: int = 1) -> tuple[str, int]:
    """A regex for ``fullmatch`` and the number of groups it uses (numbered from first_group).

    The obvious translation (`*` -> `.*`) backtracks exponentially: ``*a*a*a*a*a*b`` took
    8 s on one 120-character address.  Glob matching does not need backtracking: the text
    between two stars may always take its leftmost occurrence.  So every star but the last
    becomes an atomic "skip to the next occurrence" -- ``(?=(.*?SEGMENT))\\N`` (lookahead plus
    back-reference is the atomic group of Python < 3.11) -- and matching stays O(length x
    pattern).  Groups are numbered explicitly so many patterns can share one regex.
    """
    segments: list[list[str]] = [[]]  # regex pieces between the stars
    for token in tokens:
        if token is STAR:
            segments.append([])
        else:
            segments[-1].append(re.escape(token) if isinstance(token, str) else ".")  # or QMARK
    texts = ["".join(segment) for segment in segments]
    if len(texts) == 1:  # no star
        return texts[0], 0
    head, middles, tail = texts[0], texts[1:-1], texts[-1]
    if not tail and middles:
        # `...*S*`: `.*S.*` cannot backtrack badly (the final `.*` never fails) and runs
        # about 4x faster than the atomic form -- this is the common `*word*` pattern.
        middles, tail = middles[:-1], f"{middles[-1]}.*"
    skips = [
        f"(?=(.*?{middle}))\\{number}" for number, middle in enumerate(middles, start=first_group)
    ]
    return head + "".join(skips) + ".*" + tail, len(middles)


def _compile(tokens: list[Token]) -> re.Pattern[str]:
    return re.compile(_regex_source(tokens)[0], re.DOTALL)


@dataclass(frozen=True)
class CompiledPattern:
    """One blocklist pattern, ready to match normalised addresses."""

    text: str  # as the operator wrote it
    regex: re.Pattern[str]

    def matches(self, address: str) -> bool:
        return self.regex.fullmatch(normalise(address)) is not None


def compile_pattern(pattern: str) -> CompiledPattern:
    """Compile one pattern; raises :class:`PatternError` with a clear message if unusable."""
    return CompiledPattern(pattern, _compile(_tokens(pattern)))


@dataclass
class _Bucket:
    """Patterns sharing an index key; one alternation regex tests them all in C.

    ``trivial`` is set when some pattern in the bucket matches whenever the key is found (e.g.
    ``*@example.com`` under key ``@example.com``), so no regex is needed at all.
    """

    texts: list[str]
    tokens: list[list[Token]]
    trivial: str | None = None
    _regex: re.Pattern[str] | None = None  # compiled on first use: most buckets never are
    _singles: list[re.Pattern[str]] | None = None

    def add(self, text: str, tokens: list[Token], trivial: bool) -> None:
        if trivial and self.trivial is None:
            self.trivial = text
        self.texts.append(text)
        self.tokens.append(tokens)

    def match(self, address: str) -> str | None:
        if self.trivial is not None:
            return self.trivial
        if self._regex is None:
            self._regex = self._combined()
        if self._regex.fullmatch(address) is None:
            return None
        # A hit is rare; only then find out which pattern it was, in the order added.
        if self._singles is None:
            self._singles = [_compile(tokens) for tokens in self.tokens]
        for text, single in zip(self.texts, self._singles, strict=True):
            if single.fullmatch(address):
                return text
        raise AssertionError("combined pattern matched but no single one did")  # unreachable

    def _combined(self) -> re.Pattern[str]:
        # No capturing group around each alternative: the regex compiler then factors out
        # common prefixes and skips alternatives on their first character, which groups
        # would prevent (measured: 150 `spam<n>*@gmx.de` cost 17 us per gmx.de address).
        sources = []
        group = 1
        for tokens in self.tokens:
            source, groups = _regex_source(tokens, group)
            sources.append(source)
            group += groups
        return re.compile("|".join(sources), re.DOTALL)


def _new_bucket() -> _Bucket:
    return _Bucket([], [])


class Blocklist:
    """Matches addresses against many patterns at once.

    Patterns are indexed by their literal ends, so an address is tested only against the few
    patterns that could match it:

    * no wildcard (an exact address): one dict lookup;
    * a literal tail (after the last wildcard) with ``@`` or ``.`` -- ``*@example.com``,
      ``*@*.example.com``, ``spam*@example.com`` -- keyed by the tail from its last ``@`` (else
      its first dot); an address looks up its suffixes at its ``@`` and at its domain's dots,
      two or three dict lookups however many domains are blocked;
    * the mirror image for literal heads: ``info@*``, ``abuse@example.*``;
    * other literal heads or tails (``*spam``): keyed by their text, one lookup per length;
    * a wildcard at both ends (``*spam*``, ``?*``): one alternation regex tried on every
      address, the only part whose cost grows with the number of patterns.

    Patterns under one key share one alternation regex (compiled on first use), so even
    thousands of ``spam<n>*@gmx.de`` cost one regex call per gmx.de address.

    When several patterns match, :meth:`matches` reports one of them: exact first, then by
    tails, heads, and the both-ends wildcards; under one key, a pattern that is just ``*`` and
    the key (``*@example.com``) before the others, else the first added.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._exact: dict[str, str] = {}
        self._tail_sep: dict[str, _Bucket] = {}
        self._head_sep: dict[str, _Bucket] = {}
        # Which kinds of separator keys exist, so matches() skips the lookups it cannot need.
        self._tail_at = self._tail_dot = self._head_at = self._head_dot = False
        self._tail_len: dict[int, dict[str, _Bucket]] = {}
        self._head_len: dict[int, dict[str, _Bucket]] = {}
        self._floating = _new_bucket()
        self._has_floating = False
        self._seen: set[str] = set()
        for pattern in patterns:
            self.add(pattern)

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, pattern: str) -> None:
        """Add one pattern; raises :class:`PatternError` if it is unusable."""
        tokens = _tokens(pattern)
        source = _regex_source(tokens)[0]
        if source in self._seen:
            return  # the same pattern again: the first one is reported
        self._seen.add(source)
        if len(tokens) == 1 and isinstance(tokens[0], str):
            self._exact.setdefault(tokens[0], pattern)
            return
        first, last = tokens[0], tokens[-1]
        # "Trivial": the pattern is `*` plus exactly the index key, so finding the key decides.
        if isinstance(last, str):
            bucket, key = self._index(self._tail_sep, self._tail_len, last, tail=True)
            self._tail_at |= key[0] == "@"
            self._tail_dot |= key[0] == "."
            trivial = len(tokens) == 2 and first is STAR and key == last
            bucket.add(pattern, tokens, trivial=trivial)
        elif isinstance(first, str):
            bucket, key = self._index(self._head_sep, self._head_len, first, tail=False)
            self._head_at |= key[-1] == "@"
            self._head_dot |= key[-1] == "."
            trivial = len(tokens) == 2 and last is STAR and key == first
            bucket.add(pattern, tokens, trivial=trivial)
        else:
            self._floating.add(pattern, tokens, trivial=False)
            self._has_floating = True

    @staticmethod
    def _index(
        by_sep: dict[str, _Bucket],
        by_len: dict[int, dict[str, _Bucket]],
        literal: str,
        *,
        tail: bool,
    ) -> tuple[_Bucket, str]:
        """The bucket for a literal head or tail, and the key it is found by."""
        key = _sep_key(literal, tail=tail)
        if key is not None:
            return by_sep.setdefault(key, _new_bucket()), key
        return by_len.setdefault(len(literal), {}).setdefault(literal, _new_bucket()), literal

    def matches(self, address: str) -> str | None:
        """The pattern (as given) that blocks ``address``, or None."""
        address = normalise(address)
        found = self._exact.get(address)
        if found is not None:
            return found
        # Hand-inlined loops, not generators: this runs a million times per import.  Each
        # loop runs only if some key needs it (typically: no head key ends with a dot).
        tails, heads = self._tail_sep, self._head_sep
        if self._tail_at:
            at = address.rfind("@")
            while at >= 0:  # every "@": one for a valid address
                bucket = tails.get(address[at:])
                if bucket is not None and (found := bucket.match(address)) is not None:
                    return found
                at = address.rfind("@", 0, at)
        if self._tail_dot:
            dot = address.find(".", address.rfind("@") + 1)
            while dot >= 0:  # dots of the domain: tail keys without "@"
                bucket = tails.get(address[dot:])
                if bucket is not None and (found := bucket.match(address)) is not None:
                    return found
                dot = address.find(".", dot + 1)
        if self._head_at:
            at = address.find("@")
            while at >= 0:
                bucket = heads.get(address[: at + 1])
                if bucket is not None and (found := bucket.match(address)) is not None:
                    return found
                at = address.find("@", at + 1)
        if self._head_dot:
            end = address.find("@")
            end = len(address) if end < 0 else end
            dot = address.find(".", 0, end)
            while dot >= 0:  # dots of the local part: head keys without "@"
                bucket = heads.get(address[: dot + 1])
                if bucket is not None and (found := bucket.match(address)) is not None:
                    return found
                dot = address.find(".", dot + 1, end)
        for length, buckets in self._tail_len.items():
            bucket = buckets.get(address[-length:])
            if bucket is not None and (found := bucket.match(address)) is not None:
                return found
        for length, buckets in self._head_len.items():
            bucket = buckets.get(address[:length])
            if bucket is not None and (found := bucket.match(address)) is not None:
                return found
        if self._has_floating:
            return self._floating.match(address)
        return None


def _sep_key(literal: str, *, tail: bool) -> str | None:
    """The index key of a literal tail or head, None if it has no ``@`` or ``.``.

    A tail's key runs from its last ``@`` -- or, without one, from its first ``.`` -- to the
    end, so it starts at an ``@`` of the address, or at a dot after the address's last ``@``:
    :meth:`Blocklist.matches` looks up only those few suffixes.  Heads mirror this: up to the
    first ``@``, else up to the last dot (a dot before the address's first ``@``).
    """
    if tail:
        at = literal.rfind("@")
        start = at if at >= 0 else literal.find(".")
        return None if start < 0 else literal[start:]
    at = literal.find("@")
    end = at if at >= 0 else literal.rfind(".")
    return None if end < 0 else literal[: end + 1]
