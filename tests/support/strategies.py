"""hypothesis strategies for export requests and S3 events: mostly plausible, often wrong.

Shared by the unit tests (webhook ⇒ spec model ⇒ processor settings) and the cluster tests
(webhook ⇒ the real API server). The pieces mix valid values with the cases that once got a 202
and then failed at run time (issue 12): delimiters "\\n" "\\r" "✓" "😀" NUL, quote "\\n", encodings
utf-16/rot13/bogus-enc, buckets 192.168.1.1 and my.-bucket, keys with `..` or `//`.
"""

from __future__ import annotations

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
