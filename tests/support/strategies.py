"""hypothesis strategies for export requests and S3 events: mostly plausible, often wrong.

Shared by the unit tests (webhook ⇒ spec model ⇒ processor settings) and the cluster tests
(webhook ⇒ the real API server). The pieces mix valid values with the cases that once got a 202
and then failed at run time (issue 12): delimiters "\\n" "\\r" "✓" "😀" NUL, quote "\\n", encodings
utf-16/rot13/bogus-enc, buckets 192.168.1.1 and my.-bucket, keys with `..` or `//`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

KNOWN_BAD_CHARS = ["\n", "\r", "✓", "😀", "\x00", "\x7f", "", ";;"]
CHARS = st.one_of(
    st.sampled_from([",", ";", "\t", "|", '"', "'", " ", *KNOWN_BAD_CHARS]),
    st.characters(),
)
ENCODINGS = st.one_of(
    st.sampled_from(
        [
            *("utf-8", "UTF8", "utf-8-sig", "latin-1", "cp1252", "ascii", "shift_jis"),
            *("utf-16", "utf-16-le", "utf_32", "utf-7", "rot13", "bogus-enc", "base64", "x" * 40),
        ]
    ),
    st.text(max_size=12),
)
BUCKETS = st.one_of(
    st.sampled_from(
        [
            *("exports-input", "my.bucket", "a1b", "in--put", "abc.d-e.f"),
            *("192.168.1.1", "my.-bucket", "my-.bucket", "a..b", "Bad", "ab", "-ab", "a" * 64),
        ]
    ),
    st.text(alphabet="ab0.-", min_size=1, max_size=8),
)
SEGMENTS = st.one_of(
    st.sampled_from(["data", "report 1.csv", "ü.csv", "a+b", "%2F", "..", ".", "", "x\x01"]),
    st.text(max_size=6),
)
KEYS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)
OBJECT_URIS = st.builds(lambda b, k: f"s3://{b}/{k}", BUCKETS, KEYS)
PREFIX_URIS = st.one_of(
    st.builds(lambda b, k: f"s3://{b}/{k}/", BUCKETS, KEYS),
    st.builds(lambda b: f"s3://{b}/", BUCKETS),
    OBJECT_URIS,
)
FORMATS = st.sampled_from(["csv", "csv.gz", "jsonl", "parquet", "xlsx", "CSV"])


def _drop_absent(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not ABSENT}


ABSENT = object()


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), strategy)


CSV_OPTIONS = st.fixed_dictionaries(
    {
        "delimiter": optional(CHARS),
        "quote": optional(CHARS),
        "header": optional(st.one_of(st.booleans(), st.sampled_from(["yes", 1]))),
        "encoding": optional(ENCODINGS),
    }
).map(_drop_absent)
SOURCES = st.one_of(
    OBJECT_URIS,
    st.fixed_dictionaries(
        {
            "uri": OBJECT_URIS,
            "version_id": optional(st.text(max_size=8)),
            "etag": optional(st.text(max_size=8)),
        }
    ).map(_drop_absent),
)
REQUESTS = st.fixed_dictionaries(
    {
        "source": SOURCES,
        "format": FORMATS,
        "destination": optional(PREFIX_URIS),
        "csv": optional(CSV_OPTIONS),
        # In bounds and out (0, 33, negative, booleans, floats, text): a 422 or a valid spec.
        "parallelism": optional(
            st.one_of(st.integers(-2, 40), st.booleans(), st.floats(0, 40), st.just("4"))
        ),
    }
).map(_drop_absent)


def s3_event(bucket: str, raw_key: str, size: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": raw_key, "eTag": "0123abcd", "sequencer": "0055AED6DCD90281E5"}
    if size is not None:
        obj["size"] = size
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


EVENT_KEYS = st.one_of(
    KEYS.map(lambda k: quote(k, safe="/").replace("%20", "+")),
    st.sampled_from(["%FF%FE.csv", "a%C3%28.csv", "ok%2Fx.csv", "a//b.csv", "../up.csv"]),
)
EVENTS = st.builds(s3_event, BUCKETS, EVENT_KEYS)


# Hostile values (issue 24): what once got a 202 or a 500 from `POST /v1/events/s3`.
HUGE_INTS = st.one_of(
    st.sampled_from([10**400, 5 * 1024**4 + 1, 2**63, 2**64 + 1, -1]),
    st.integers(min_value=5 * 1024**4 + 1),
    st.integers(max_value=-1),
)
UNICODE_DIGITS = st.one_of(
    st.sampled_from(["²", "١٢٣", "\U0001d7d9\U0001d7da", "1²", "٣" * 20, "9" * 5000, "5" * 400]),
    st.text(
        alphabet=st.characters(categories=["Nd", "No"], exclude_characters="0123456789"),
        min_size=1,
        max_size=20,
    ),
)
LONE_SURROGATES = st.one_of(
    st.sampled_from(["\ud800", "\udfff", "a\udc80b", "0055AED6\ud83d"]),
    # A high surrogate followed by a low one is a pair: JSON decodes it to one character.
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=4).filter(
        lambda text: re.search("[\ud800-\udbff][\udc00-\udfff]", text) is None
    ),
)
OVER_LONG = st.sampled_from(["x" * 1025, "7" * 2049, "a" * 70_000, "s" * 5000])
HOSTILE_NUMBERS = st.one_of(HUGE_INTS, UNICODE_DIGITS, LONE_SURROGATES, OVER_LONG)
"""What a size field may be sent as: none of it is a size."""
HOSTILE_STRINGS = st.one_of(HUGE_INTS, LONE_SURROGATES, OVER_LONG)
"""What a string field may be sent as: none of it is a version, ETag or sequencer."""

S3_OBJECT_FIELDS = {"size": HOSTILE_NUMBERS, "versionId": HOSTILE_STRINGS,
                    "eTag": HOSTILE_STRINGS, "sequencer": HOSTILE_STRINGS,
                    "key": st.one_of(HUGE_INTS, OVER_LONG)}  # fmt: skip
EVENTBRIDGE_OBJECT_FIELDS = {"size": HOSTILE_NUMBERS, "version-id": HOSTILE_STRINGS,
                             "etag": HOSTILE_STRINGS, "sequencer": HOSTILE_STRINGS,
                             "key": st.one_of(HUGE_INTS, LONE_SURROGATES, OVER_LONG)}  # fmt: skip


def eventbridge_event(bucket: str, key: str, size: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "etag": "0123abcd", "sequencer": "0055AED6DCD90281E5"}
    if size is not None:
        obj["size"] = size
    return {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {"bucket": {"name": bucket}, "object": obj},
    }


def _with_object_field(event: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    obj = event["Records"][0]["s3"]["object"] if "Records" in event else event["detail"]["object"]
    obj[name] = value
    return event


HOSTILE_EVENTS = st.one_of(
    *(
        st.builds(_with_object_field, st.builds(s3_event, st.just("exports-input"),
                  st.just("in/a.csv")), st.just(name), values)
        for name, values in S3_OBJECT_FIELDS.items()
    ),
    *(
        st.builds(_with_object_field, st.builds(eventbridge_event, st.just("exports-input"),
                  st.just("in/a.csv")), st.just(name), values)
        for name, values in EVENTBRIDGE_OBJECT_FIELDS.items()
    ),
)  # fmt: skip
"""A valid S3 or EventBridge event with one object field made hostile: each must be a 4xx."""


def _request_with(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": {"uri": "s3://exports-input/a.csv"}, "format": "csv"}
    if field == "dataset_id":
        del body["source"]
    where, _, inner = field.partition(".")
    if inner:
        body.setdefault(where, {})[inner] = value
    else:
        body[where] = value
    return body


REQUEST_FIELDS = {
    "source.uri": st.one_of(HUGE_INTS, OVER_LONG, LONE_SURROGATES.map("s3://exports-input/".__add__)),
    "source.version_id": HOSTILE_STRINGS,
    "source.etag": HOSTILE_STRINGS,
    "destination": st.one_of(HUGE_INTS, OVER_LONG, LONE_SURROGATES.map("s3://exports-output/".__add__)),
    "callback_url": st.one_of(HUGE_INTS, OVER_LONG, LONE_SURROGATES.map("https://h.example/".__add__)),
    "format": HOSTILE_NUMBERS,
    "csv.delimiter": HOSTILE_NUMBERS,
    "csv.encoding": HOSTILE_NUMBERS,
    "csv.header": HOSTILE_NUMBERS,
    "dataset_id": HOSTILE_NUMBERS,
    "parallelism": st.one_of(HOSTILE_NUMBERS, st.sampled_from([0, 33, -1, True, 2.5, "2"])),
}  # fmt: skip
HOSTILE_REQUESTS = st.one_of(
    *(st.builds(_request_with, st.just(name), values) for name, values in REQUEST_FIELDS.items())
)
"""A valid `POST /v1/exports` body with one field made hostile: each must be a 4xx."""
