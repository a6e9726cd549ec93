"""The contract's field types, each constraint written once: a field's JSON Schema keywords
(pattern, lengths, bounds) and its Python check come from the same constants (`s3names` for
URIs); models.py builds the request and the spec from them."""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, ValidationInfo
from pydantic_core import PydanticCustomError

from export_operator import s3names
from export_operator.callbacks import MAX_URL_LENGTH, CallbackPolicy, CallbackRefusedError
from export_operator.principals import PRINCIPAL_MAX_LENGTH, PRINCIPAL_PATTERN
from export_processor.common import CSV_CHAR_PATTERN, is_supported_encoding

ENCODING_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
ENCODING_MAX_LENGTH = 32
DATASET_ID_PATTERN = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
CALLBACK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s]+$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Version ids and ETags: no control characters (they travel in environment variables, which
cannot hold a NUL)."""


def refusal(code: str, message: str) -> PydanticCustomError:
    """A validation error whose `type` is `code` (a problem code where one applies)."""
    return PydanticCustomError(code, "{reason}", {"reason": message})


def is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_uri(value: str, *, prefix: bool) -> str:
    try:
        s3names.check_uri(value, prefix=prefix)
    except s3names.S3UriError as exc:
        raise refusal("invalid-s3-key" if exc.bad_key else "invalid-s3-uri", str(exc)) from None
    return value


_CSV_CHAR = re.compile(CSV_CHAR_PATTERN)
_ENCODING = re.compile(ENCODING_PATTERN)


def _csv_char(value: str) -> str:
    if _CSV_CHAR.fullmatch(value) is None:
        raise refusal(
            "invalid-csv-option",
            f"must be one printable ASCII character or a tab, not {value!r}",
        )
    return value


def _encoding(value: str) -> str:
    if (
        len(value) > ENCODING_MAX_LENGTH
        or _ENCODING.fullmatch(value) is None
        or not is_supported_encoding(value)
    ):
        raise refusal(
            "invalid-csv-option",
            f"{value!r} is not a supported encoding: an ASCII-compatible text encoding such as "
            "utf-8, utf-8-sig, latin-1 or cp1252 is needed",
        )
    return value


def dataset_id(value: str) -> str:
    """The UUID in its canonical form (lower case); 36 characters, hyphens included."""
    with contextlib.suppress(ValueError):
        if len(value) == 36:
            return str(uuid.UUID(value))
    raise refusal("invalid-request", f"must be a UUID, not {value!r}")


def _callback_url(value: Any, info: ValidationInfo) -> Any:
    """The callback policy's static checks (`export_operator.callbacks`); the webhook passes its
    configured policy as validation context `callback_policy`."""
    policy = (info.context or {}).get("callback_policy") or CallbackPolicy()
    try:
        return policy.check_url(value).url
    except CallbackRefusedError as exc:
        raise refusal("invalid-callback-url", str(exc)) from None


def _cel(*rules: s3names.Rule) -> list[dict[str, str]]:
    return [{"rule": r.cel, "message": r.message} for r in rules]


ObjectUri = Annotated[
    str,
    Field(
        max_length=s3names.OBJECT_URI_MAX_LENGTH,
        json_schema_extra={
            "pattern": s3names.OBJECT_URI_PATTERN,
            "x-kubernetes-validations": _cel(*s3names.RULES),
        },
    ),
    AfterValidator(functools.partial(_check_uri, prefix=False)),
]
PrefixUri = Annotated[
    str,
    Field(
        max_length=s3names.PREFIX_URI_MAX_LENGTH,
        json_schema_extra={
            "pattern": s3names.PREFIX_URI_PATTERN,
            "x-kubernetes-validations": _cel(*s3names.RULES),
        },
    ),
    AfterValidator(functools.partial(_check_uri, prefix=True)),
]
CsvChar = Annotated[
    str,
    Field(min_length=1, max_length=1, json_schema_extra={"pattern": CSV_CHAR_PATTERN}),
    AfterValidator(_csv_char),
]
Encoding = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ENCODING_MAX_LENGTH,
        json_schema_extra={"pattern": ENCODING_PATTERN},
    ),
    AfterValidator(_encoding),
]
VersionId = Annotated[str, Field(min_length=1, max_length=1024, pattern=PRINTABLE_PATTERN)]
ETag = Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE_PATTERN)]
NotifyUrl = Annotated[
    str, Field(min_length=8, max_length=MAX_URL_LENGTH, pattern=CALLBACK_URL_PATTERN)
]
CallbackUrl = Annotated[NotifyUrl, BeforeValidator(_callback_url)]
PrincipalName = Annotated[
    str, Field(min_length=1, max_length=PRINCIPAL_MAX_LENGTH, pattern=PRINCIPAL_PATTERN)
]
MAX_PARALLELISM = 32
"""The most pods one export may ask for (`parallelism`); the operator caps it further
(EXPORTJOBS_OPERATOR_SPLIT_MAX_PARALLELISM)."""
Parallelism = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=MAX_PARALLELISM,
        description="Run the export as up to this many pods at once, each converting one byte "
        "range of the source, with a result equal to one pod's (docs/api.md, 'Split exports'); "
        "1 = one pod whatever the size. Default: split only sources of at least the operator's "
        "split.minBytes.",
        json_schema_extra={"format": "int32"},
    ),
]
SpecDatasetId = Annotated[str, Field(pattern=DATASET_ID_PATTERN, min_length=36, max_length=36)]
