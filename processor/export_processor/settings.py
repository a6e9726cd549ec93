"""The processor's settings: one typed object, read once at start-up from the environment.

The operator sets these variables on the Job's container; by hand, the CLI flags override them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as fields_of
from pathlib import Path
from typing import Any, TypeVar, cast

from export_processor import common
from export_processor.common import is_csv_char, is_supported_encoding
from export_processor.errors import InvalidConfigError

FORMATS = ("csv", "csv.gz", "jsonl", "parquet")
MiB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MiB
BASELINE_BYTES = 130 * MiB
"""The interpreter with pyarrow, botocore and isal imported and their threads started, before the
first byte is read (measured: docs/benchmarks.md, "Figures behind constants")."""
QUEUED_BATCHES = 3
"""Typed batches queued between the reader thread and the writer: fewer stalled the reader while
the Parquet writer encoded a row group, more went over the memory bound (docs/benchmarks.md,
"Figures behind constants")."""
PARQUET_ROW_GROUP_BYTES = 16 * MiB
"""Arrow data buffered per Parquet row group (its encoded pages come on top: counted twice)."""


@dataclass(frozen=True)
class ArrowDecay:
    """How long Arrow's allocator keeps freed pages for a format, and the memory that costs."""

    ms: int = 0
    allowance: int = 0
    """Bytes counted for it in `memory_bound()`."""


ARROW_DECAY = {
    "csv": ArrowDecay(ms=400, allowance=48 * MiB),
    "csv.gz": ArrowDecay(ms=200, allowance=40 * MiB),
    "jsonl": ArrowDecay(ms=400, allowance=40 * MiB),
    "parquet": ArrowDecay(ms=100, allowance=24 * MiB),
}
"""Per format, how long Arrow's allocator keeps freed pages before returning them (`ms`; a
format not named: NO_DECAY). Every format frees and allocates big buffers for every batch;
returned at once, each came back as fresh pages, a page fault per 4 KiB. `allowance` is the
freed memory a decay keeps at the rate a 2-core export frees it, counted in the bound. Both
measured per format: docs/benchmarks.md, "Figures behind constants"."""
NO_DECAY = ArrowDecay()
"""A format without a measured decay: freed pages go back at once."""
KEPT_DOWNLOAD_BUFFERS = 1
"""Free GET buffers kept for the next GET (s3_source.DownloadBuffers): read_chunk_size each."""
GZIP_CHUNK_BYTES = 1 * MiB
"""Text deflated per csv.gz task; two tasks queued per thread, each with its output."""
N = TypeVar("N", int, float)
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, kw_only=True)
class KubeSettings:
    """Where and how to patch the ExportJob's `status.progress` (best effort)."""

    api_url: str | None = None
    """EXPORTJOBS_KUBE_API_URL. Default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    in a pod; unset outside one, which turns progress reporting off."""
    token_file: Path = SERVICE_ACCOUNT_DIR / "token"
    """EXPORTJOBS_KUBE_TOKEN_FILE. The bearer token, re-read for every patch because projected
    service account tokens rotate."""
    ca_file: Path | None = SERVICE_ACCOUNT_DIR / "ca.crt"
    """EXPORTJOBS_KUBE_CA_FILE. The API server's CA bundle; empty means the system CAs."""
    insecure_skip_tls_verify: bool = False
    """EXPORTJOBS_KUBE_INSECURE_SKIP_TLS_VERIFY. Local test runs only; default false."""
    progress_interval_seconds: float = 5.0
    """EXPORTJOBS_PROGRESS_INTERVAL_SECONDS. Seconds between progress patches (default 5): often
    enough for a progress bar, rare enough to cost the API server nothing."""
    request_timeout_seconds: float = 5.0
    """EXPORTJOBS_KUBE_TIMEOUT_SECONDS. Per-request timeout of a progress patch (default 5), so a
    slow API server never stalls the export."""
    final_wait_seconds: float = 120.0
    """EXPORTJOBS_PROGRESS_FINAL_WAIT_SECONDS. How long the last patch (100 %) is tried again when
    an API server that answered this process stops answering (default 120: an API server restart
    or a control-plane upgrade). Nothing waits on the pod meanwhile: the operator cannot record
    the result before the API server is back either."""


@dataclass(frozen=True, kw_only=True)
class CsvOptions:
    """How the input CSV is read."""

    delimiter: str = ","
    """EXPORTJOBS_CSV_DELIMITER / --delimiter. One character; `\\t` or `tab` for a tab."""
    header: bool = True
    """EXPORTJOBS_CSV_HEADER / --no-header. Whether the first row names the columns; without
    one, the columns are named f0, f1, ..."""
    quote: str = '"'
    """EXPORTJOBS_CSV_QUOTE / --quote. One character."""
    encoding: str = "utf-8"
    """EXPORTJOBS_CSV_ENCODING / --encoding. The input's text encoding; output is always UTF-8."""
    column_types: str = "auto"
    """EXPORTJOBS_COLUMN_TYPES. `auto` (default): every column is text for csv/csv.gz, inferred
    int/float/bool (and date/timestamp for parquet) for jsonl/parquet; `string`: text always.
    See docs/processor.md, "Column types"."""


@dataclass(frozen=True, kw_only=True)
class Buffers:
    """How much is read, parsed, compressed and uploaded at once: the memory an export may use
    (`ProcessorSettings.memory_bound`)."""

    block_size: int = 4 * MiB
    """EXPORTJOBS_BLOCK_SIZE_BYTES. CSV parser block (default 4 MiB): the unit of parallel
    parsing and of memory, and the longest row accepted (a longer row is BAD_CSV). Fixed for
    the whole export, so a long row never makes the export start over."""
    blocks_ahead: int = 2
    """EXPORTJOBS_BLOCKS_AHEAD. Parser blocks read ahead of the batches taken from it (default
    2); with the block size this bounds the input held in memory. Parsed batches wait in a
    queue of QUEUED_BATCHES after these."""
    part_size: int = 8 * MiB
    """EXPORTJOBS_S3_PART_SIZE_BYTES. First multipart part size (default 8 MiB, at least 5 MiB).
    Doubles every 1000 parts, so the 10000-part limit is never reached (>80 GB works)."""
    upload_concurrency: int = 2
    """EXPORTJOBS_S3_UPLOAD_CONCURRENCY. Parts uploaded at once (default 2); memory holds this
    many parts plus the one being filled."""
    read_chunk_size: int = 4 * MiB
    """EXPORTJOBS_S3_READ_CHUNK_BYTES. Size of each ranged GET (default 4 MiB, one parser block:
    the parser's blocks are views of the GETs, so a block never holds a larger GET in memory)."""
    read_ahead: int = 3
    """EXPORTJOBS_S3_READ_AHEAD. Ranged GETs in flight ahead of the parser (default 3)."""
    s3_max_attempts: int = 5
    """EXPORTJOBS_S3_MAX_ATTEMPTS. botocore attempts per S3 request (default 5, standard mode)."""
    gzip_level: int = 1
    """EXPORTJOBS_GZIP_LEVEL. ISA-L deflate level for csv.gz, 0..3 (default 1: about the size of
    `gzip -1` at ~3.5x its speed; 3 is the smallest)."""
    gzip_threads: int = 2
    """EXPORTJOBS_GZIP_THREADS. Threads compressing csv.gz chunks in parallel (default 2)."""
    memory_limit: int = 300 * MiB
    """EXPORTJOBS_MEMORY_LIMIT_BYTES. The most memory the buffers above may add up to, with the
    interpreter and libraries (default 300 MiB): settings whose bound (`memory_bound()`) is
    higher are refused at start (INVALID_CONFIG). See docs/processor.md, "Memory"."""


@dataclass(frozen=True, kw_only=True)
class ProcessorSettings:
    """Everything one export needs. Sizes in bytes."""

    source_uri: str
    """EXPORTJOBS_SOURCE_URI / --source. `s3://bucket/key` or `file:///path` of the input CSV."""
    destination_uri: str
    """EXPORTJOBS_DESTINATION_URI / --destination. `s3://bucket/prefix/` or `file:///dir/`."""
    export_format: str
    """EXPORTJOBS_FORMAT / --format. One of csv, csv.gz, jsonl, parquet."""
    source_version_id: str | None = None
    """EXPORTJOBS_SOURCE_VERSION_ID. Read exactly this object version."""
    source_etag: str | None = None
    """EXPORTJOBS_SOURCE_ETAG. Refuse the source (exit 3) when its ETag differs."""
    export_name: str | None = None
    """EXPORTJOBS_EXPORT_NAME. The ExportJob's name: part of the output key and the object of
    progress patches."""
    export_namespace: str | None = None
    """EXPORTJOBS_EXPORT_NAMESPACE. The ExportJob's namespace, for progress patches."""
    termination_message_path: Path = Path("/dev/termination-log")
    """EXPORTJOBS_TERMINATION_MESSAGE_PATH. Written only when it exists or was set explicitly, so
    a run by hand leaves /dev alone."""
    termination_message_explicit: bool = False
    """Whether the path above was set explicitly (not a variable of its own)."""
    csv: CsvOptions = field(default_factory=CsvOptions)
    """How the input CSV is read."""
    buffers: Buffers = field(default_factory=Buffers)
    """Buffer sizes and concurrency (memory)."""
    kube: KubeSettings = field(default_factory=KubeSettings)
    """Progress reporting to the ExportJob."""

    @classmethod
    def of(cls, **fields: Any) -> ProcessorSettings:
        """The settings from fields given flat (`delimiter=`, `block_size=`: routed to their
        group; the groups' field names are unique)."""
        csv = {k: fields.pop(k) for k in list(fields) if k in CSV_FIELDS}
        buffers = {k: fields.pop(k) for k in list(fields) if k in BUFFER_FIELDS}
        return cls(**fields, csv=CsvOptions(**csv), buffers=Buffers(**buffers))

    @property
    def arrow_decay(self) -> ArrowDecay:
        """How long Arrow keeps freed pages for this export's format (ARROW_DECAY)."""
        return ARROW_DECAY.get(self.export_format, NO_DECAY)

    def memory_bound(self) -> int:
        """Peak memory these settings allow, in bytes, whatever the input's size.

        Each stage holds a bounded number of buffers (docs/processor.md, "Memory"): ranged GETs
        in flight and the one being read; parser blocks read ahead (raw bytes plus their text
        arrays); typed batches queued and the one being written (text plus typed columns); the
        writer's own buffer; S3 parts uploading and the one filling. Plus the interpreter and
        the libraries (BASELINE_BYTES, measured), and for JSON Lines the freed memory the
        allocator keeps for a moment (ARROW_DECAY, measured). Multipart parts double
        after 1000 parts (outputs beyond 8 GiB with 8 MiB parts): each doubling adds
        `upload_concurrency + 1` parts' worth.
        """
        b = self.buffers
        block = b.block_size
        reading = (b.read_ahead + 1 + KEPT_DOWNLOAD_BUFFERS) * b.read_chunk_size
        parsing = (b.blocks_ahead + 2) * block * 2
        queued = (QUEUED_BATCHES + 1) * block * 2
        writing = {
            "parquet": 2 * PARQUET_ROW_GROUP_BYTES,
            "csv.gz": 2 * block + 4 * b.gzip_threads * GZIP_CHUNK_BYTES,
        }.get(self.export_format, 2 * block)
        uploading = (b.upload_concurrency + 1) * b.part_size
        kept = self.arrow_decay.allowance
        return BASELINE_BYTES + reading + parsing + queued + writing + uploading + kept

    def validate(self) -> None:
        """Raise InvalidConfigError when a value cannot work."""
        b, c = self.buffers, self.csv
        if self.export_format not in FORMATS:
            raise InvalidConfigError(
                f"unknown format {self.export_format!r} (expected one of {', '.join(FORMATS)})"
            )
        for name, value in (("delimiter", c.delimiter), ("quote", c.quote)):
            if not is_csv_char(value):
                raise InvalidConfigError(
                    f"the CSV {name} must be one printable ASCII character or a tab, not {value!r}"
                )
        if c.delimiter == c.quote:
            raise InvalidConfigError("the CSV delimiter and quote must differ")
        if c.column_types not in ("auto", "string"):
            raise InvalidConfigError("EXPORTJOBS_COLUMN_TYPES must be auto or string")
        if b.part_size < S3_MIN_PART_SIZE:
            raise InvalidConfigError(f"the S3 part size must be at least {S3_MIN_PART_SIZE}")
        if not 0 <= b.gzip_level <= 3:
            raise InvalidConfigError("the gzip level must be 0..3 (ISA-L deflate levels)")
        for name, number in (
            ("block size", b.block_size),
            ("blocks ahead", b.blocks_ahead),
            ("upload concurrency", b.upload_concurrency),
            ("read chunk size", b.read_chunk_size),
            ("read ahead", b.read_ahead),
            ("S3 max attempts", b.s3_max_attempts),
            ("gzip threads", b.gzip_threads),
        ):
            if number < 1:
                raise InvalidConfigError(f"the {name} must be positive")
        if self.memory_bound() > b.memory_limit:
            raise InvalidConfigError(
                f"these settings let the processor use up to {self.memory_bound() // MiB} MiB, "
                f"more than EXPORTJOBS_MEMORY_LIMIT_BYTES ({b.memory_limit // MiB} MiB): "
                "lower the block size, blocks ahead, read ahead, part size or upload concurrency"
            )
        if not is_supported_encoding(c.encoding):
            raise InvalidConfigError(
                f"unsupported encoding {c.encoding!r}: an ASCII-compatible text encoding "
                "(utf-8, latin-1, cp1252, ...) is needed"
            )


CSV_FIELDS = frozenset(f.name for f in fields_of(CsvOptions))
BUFFER_FIELDS = frozenset(f.name for f in fields_of(Buffers))


def parse_bool(value: str, *, name: str) -> bool:
    """A boolean variable in the settings' one grammar (export_processor.common.parse_bool)."""
    try:
        return common.parse_bool(value)
    except ValueError as exc:
        raise InvalidConfigError(f"{name}: {exc}") from None


def parse_char(value: str) -> str:
    """A one-character CSV option; `\\t` and `tab` mean a tab."""
    return "\t" if value in ("\\t", "tab", "TAB") else value


def _number(env: Mapping[str, str], name: str, default: N) -> N:
    """A number variable (int or float, as its default), empty = the default."""
    raw = env.get(name, "")
    parse = cast(Callable[[str], N], type(default))
    try:
        return parse(raw) if raw else default
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise InvalidConfigError(f"{name} must be {kind}, not {raw!r}") from None


def kube_settings_from_env(env: Mapping[str, str]) -> KubeSettings:
    """Read the progress-reporting settings; in a pod the defaults need no variable at all."""
    api_url = env.get("EXPORTJOBS_KUBE_API_URL") or None
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if api_url is None and host:
        host = f"[{host}]" if ":" in host else host
        api_url = f"https://{host}:{port or '443'}"
    defaults = KubeSettings()
    ca_raw = env.get("EXPORTJOBS_KUBE_CA_FILE")
    ca_file = defaults.ca_file if ca_raw is None else (Path(ca_raw) if ca_raw else None)
    return KubeSettings(
        api_url=api_url.rstrip("/") if api_url else None,
        token_file=Path(env.get("EXPORTJOBS_KUBE_TOKEN_FILE") or defaults.token_file),
        ca_file=ca_file,
        insecure_skip_tls_verify=parse_bool(
            env.get("EXPORTJOBS_KUBE_INSECURE_SKIP_TLS_VERIFY") or "false",
            name="EXPORTJOBS_KUBE_INSECURE_SKIP_TLS_VERIFY",
        ),
        progress_interval_seconds=_number(
            env, "EXPORTJOBS_PROGRESS_INTERVAL_SECONDS", defaults.progress_interval_seconds
        ),
        request_timeout_seconds=_number(
            env, "EXPORTJOBS_KUBE_TIMEOUT_SECONDS", defaults.request_timeout_seconds
        ),
        final_wait_seconds=_number(
            env, "EXPORTJOBS_PROGRESS_FINAL_WAIT_SECONDS", defaults.final_wait_seconds
        ),
    )


def settings_from_env(
    env: Mapping[str, str] | None = None, **overrides: object
) -> ProcessorSettings:
    """Build the settings from the environment, then apply CLI overrides (None = not given).

    Raises:
        InvalidConfigError: when a variable is malformed or a required one is missing.
    """
    env = os.environ if env is None else env
    base = ProcessorSettings(source_uri="", destination_uri="", export_format="")
    csv, buffers = base.csv, base.buffers
    termination_raw = env.get("EXPORTJOBS_TERMINATION_MESSAGE_PATH") or None
    values: dict[str, object] = {
        "source_uri": env.get("EXPORTJOBS_SOURCE_URI", ""),
        "destination_uri": env.get("EXPORTJOBS_DESTINATION_URI", ""),
        "export_format": env.get("EXPORTJOBS_FORMAT", ""),
        "source_version_id": env.get("EXPORTJOBS_SOURCE_VERSION_ID") or None,
        "source_etag": env.get("EXPORTJOBS_SOURCE_ETAG") or None,
        "delimiter": parse_char(env.get("EXPORTJOBS_CSV_DELIMITER") or csv.delimiter),
        "header": parse_bool(
            env.get("EXPORTJOBS_CSV_HEADER") or "true", name="EXPORTJOBS_CSV_HEADER"
        ),
        "quote": parse_char(env.get("EXPORTJOBS_CSV_QUOTE") or csv.quote),
        "encoding": env.get("EXPORTJOBS_CSV_ENCODING") or csv.encoding,
        "export_name": env.get("EXPORTJOBS_EXPORT_NAME") or None,
        "export_namespace": env.get("EXPORTJOBS_EXPORT_NAMESPACE") or None,
        "termination_message_path": Path(termination_raw or base.termination_message_path),
        "termination_message_explicit": termination_raw is not None,
        "column_types": env.get("EXPORTJOBS_COLUMN_TYPES") or csv.column_types,
        "block_size": _number(env, "EXPORTJOBS_BLOCK_SIZE_BYTES", buffers.block_size),
        "blocks_ahead": _number(env, "EXPORTJOBS_BLOCKS_AHEAD", buffers.blocks_ahead),
        "part_size": _number(env, "EXPORTJOBS_S3_PART_SIZE_BYTES", buffers.part_size),
        "upload_concurrency": _number(
            env, "EXPORTJOBS_S3_UPLOAD_CONCURRENCY", buffers.upload_concurrency
        ),
        "read_chunk_size": _number(env, "EXPORTJOBS_S3_READ_CHUNK_BYTES", buffers.read_chunk_size),
        "read_ahead": _number(env, "EXPORTJOBS_S3_READ_AHEAD", buffers.read_ahead),
        "s3_max_attempts": _number(env, "EXPORTJOBS_S3_MAX_ATTEMPTS", buffers.s3_max_attempts),
        "gzip_level": _number(env, "EXPORTJOBS_GZIP_LEVEL", buffers.gzip_level),
        "gzip_threads": _number(env, "EXPORTJOBS_GZIP_THREADS", buffers.gzip_threads),
        "memory_limit": _number(env, "EXPORTJOBS_MEMORY_LIMIT_BYTES", buffers.memory_limit),
        "kube": kube_settings_from_env(env),
    }
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    if overrides.get("termination_message_path"):
        values["termination_message_explicit"] = True
    settings = ProcessorSettings.of(**values)
    for name, value in (
        ("source (EXPORTJOBS_SOURCE_URI / --source)", settings.source_uri),
        ("destination (EXPORTJOBS_DESTINATION_URI / --destination)", settings.destination_uri),
        ("format (EXPORTJOBS_FORMAT / --format)", settings.export_format),
    ):
        if not value:
            raise InvalidConfigError(f"missing {name}")
    settings.validate()
    return settings
