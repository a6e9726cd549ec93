"""The grammar of `s3://bucket/key` URIs, written once as regular expressions.

The same expressions serve three readers: the Python check below (the webhook and the operator),
the CRD's `pattern` and its CEL rules (rendered from `RULES` by `export_operator.models`), so the
API server and the webhook refuse exactly the same URIs. They use only the regular-expression
subset that Python's `re`, Go's RE2 (the API server's `pattern` and CEL `matches`) and Rust's
`regex` (pydantic) read alike: classes, groups, alternation and bounded repetition.

A bucket follows S3's naming rules: 3 to 63 characters, dot-separated labels of lowercase letters,
digits and hyphens that start and end with a letter or digit (so no `..`, `.-` or `-.`), and not
formatted as an IP address. A key is 1 to 1024 UTF-8 bytes of `/`-separated segments without
control characters, none of them empty (`//`, a leading `/`) or `.`/`..`, which some S3 clients and
tools normalise away and so would read or write another object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
"""Length and outer characters of a bucket name (the labels are checked by a rule)."""
SEGMENT = r"[^/\x00-\x1f\x7f]+"
"""One key segment: no `/` and no control characters."""

OBJECT_URI_PATTERN = rf"^s3://{BUCKET}(/{SEGMENT})+$"
"""An object: a bucket and a key of one or more segments."""
PREFIX_URI_PATTERN = rf"^s3://{BUCKET}/({SEGMENT}/)*$"
"""A destination prefix: the bucket root or segments each followed by `/`."""

_OBJECT_URI = re.compile(OBJECT_URI_PATTERN)
_PREFIX_URI = re.compile(PREFIX_URI_PATTERN)

MAX_KEY_BYTES = 1024
OBJECT_URI_MAX_LENGTH = 1100
PREFIX_URI_MAX_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Rule:
    """A regular expression a URI must (or must not) contain, and what to say when it fails."""

    regex: str
    must_match: bool
    message: str
    bad_key: bool
    """Whether a failure is about the key (problem `invalid-s3-key`) or the URI/bucket."""
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)
    """`regex` compiled once (this check runs for every request: re's own cache lookup costs
    more than the match)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.regex))

    def holds(self, uri: str) -> bool:
        return (self.compiled.search(uri) is not None) == self.must_match

    @property
    def cel(self) -> str:
        """The rule as a CEL expression on the string (`self`), as the CRD carries it."""
        test = f"self.matches(r'{self.regex}')"
        return test if self.must_match else f"!{test}"


RULES: tuple[Rule, ...] = (
    Rule(r"^s3://", True, "not an s3:// URI", bad_key=False),
    Rule(
        r"^s3://[a-z0-9]+(-+[a-z0-9]+)*(\.[a-z0-9]+(-+[a-z0-9]+)*)*/",
        True,
        "the bucket name must be 3-63 lowercase letters, digits, hyphens and single dots, "
        "each dot-separated label starting and ending with a letter or digit",
        bad_key=False,
    ),
    Rule(
        r"^s3://[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/",
        False,
        "the bucket name may not be formatted as an IP address",
        bad_key=False,
    ),
    Rule(r"[\x00-\x1f\x7f]", False, "S3 URIs may not contain control characters", bad_key=False),
    Rule(r"^s3://[^/]*/(.*/)?/", False, "S3 keys may not contain empty segments ('//')", True),
    Rule(r"/\.\.?(/|$)", False, "S3 keys may not contain '.' or '..' segments", bad_key=True),
)
"""Checked in this order, so the message names the first thing wrong."""


class S3UriError(ValueError):
    """A URI that is not an S3 object (or prefix) URI; the message is fit for a client."""

    def __init__(self, message: str, *, bad_key: bool) -> None:
        super().__init__(message)
        self.bad_key = bad_key


def check_uri(uri: str, *, prefix: bool) -> None:
    """Refuse a URI that the CRD would refuse, and keys longer than S3 allows.

    Raises:
        S3UriError: naming the first rule broken.
    """
    for rule in RULES:
        if not rule.holds(uri):
            raise S3UriError(f"{rule.message}: {uri!r}", bad_key=rule.bad_key)
    pattern, longest = (
        (_PREFIX_URI, PREFIX_URI_MAX_LENGTH) if prefix else (_OBJECT_URI, OBJECT_URI_MAX_LENGTH)
    )
    if pattern.fullmatch(uri) is None:
        what = "an s3://bucket/prefix/ URI (a prefix ends in '/')" if prefix else "an object URI"
        raise S3UriError(f"not {what}: {uri!r}", bad_key=False)
    key = uri[len("s3://") :].partition("/")[2]
    try:
        key_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no S3 key is named so
        raise S3UriError(f"S3 keys must be valid Unicode: {uri!r}", bad_key=True) from None
    if len(uri) > longest or key_bytes > MAX_KEY_BYTES:
        raise S3UriError(f"S3 keys are at most {MAX_KEY_BYTES} bytes", bad_key=True)
