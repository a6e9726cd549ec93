"""The processor's settings: one typed object, read once at start-up from `EXPORTJOBS_*`
(`ProcessorSettings.from_env`, the settings pattern of every component: env_settings.py).

The operator sets these variables on the Job's container; by hand, the CLI flags override them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from export_processor.common import is_csv_char, is_supported_encoding
from export_processor.env_settings import EnvSettings, Flag, ReadBy

PREFIX = "EXPORTJOBS_"
FORMATS = ("csv", "csv.gz", "jsonl", "parquet")
MiB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MiB
BASELINE_BYTES = 130 * MiB
"""The interpreter with pyarrow, botocore, isal and pydantic imported and their threads started,
before the first byte is read (measured: docs/benchmarks.md, "Figures behind constants")."""
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
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBE_API_URL = "EXPORTJOBS_KUBE_API_URL"
KUBE_CA_FILE = "EXPORTJOBS_KUBE_CA_FILE"
DEFAULT_CA_FILE = SERVICE_ACCOUNT_DIR / "ca.crt"


def _api_url(env: Mapping[str, str]) -> str | None:
    """EXPORTJOBS_KUBE_API_URL, else the API server of the pod's cluster."""
    api_url = env.get(KUBE_API_URL) or None
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if api_url is None and host:
        host = f"[{host}]" if ":" in host else host
        api_url = f"https://{host}:{port or '443'}"
    return api_url.rstrip("/") if api_url else None


def _ca_file(env: Mapping[str, str]) -> Path | None:
    """EXPORTJOBS_KUBE_CA_FILE: empty means the system CAs (not the default)."""
    raw = env.get(KUBE_CA_FILE)
    return DEFAULT_CA_FILE if raw is None else Path(raw) if raw else None


class KubeSettings(EnvSettings, env_prefix=PREFIX + "KUBE_", component="processor"):
    """Where and how to patch the ExportJob's `status.progress` (best effort)."""

    api_url: Annotated[
        str | None,
        ReadBy(_api_url, (KUBE_API_URL, "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")),
    ] = None
    """EXPORTJOBS_KUBE_API_URL. Default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    in a pod; unset outside one, which turns progress reporting off."""
    token_file: Path = SERVICE_ACCOUNT_DIR / "token"
    """EXPORTJOBS_KUBE_TOKEN_FILE. The bearer token, re-read for every patch because projected
    service account tokens rotate."""
    ca_file: Annotated[Path | None, ReadBy(_ca_file, (KUBE_CA_FILE,))] = DEFAULT_CA_FILE
    """EXPORTJOBS_KUBE_CA_FILE. The API server's CA bundle; empty means the system CAs."""
    insecure_skip_tls_verify: Flag = False
    """EXPORTJOBS_KUBE_INSECURE_SKIP_TLS_VERIFY. Local test runs only; default false."""
    progress_interval_seconds: float = Field(
        default=5.0, validation_alias=PREFIX + "PROGRESS_INTERVAL_SECONDS"
    )
    """EXPORTJOBS_PROGRESS_INTERVAL_SECONDS. Seconds between progress patches (default 5): often
    enough for a progress bar, rare enough to cost the API server nothing."""
    request_timeout_seconds: float = Field(
        default=5.0, validation_alias=PREFIX + "KUBE_TIMEOUT_SECONDS"
    )
    """EXPORTJOBS_KUBE_TIMEOUT_SECONDS. Per-request timeout of a progress patch (default 5), so a
    slow API server never stalls the export."""
    final_wait_seconds: float = Field(
        default=120.0, validation_alias=PREFIX + "PROGRESS_FINAL_WAIT_SECONDS"
    )
    """EXPORTJOBS_PROGRESS_FINAL_WAIT_SECONDS. How long the last patch (100 %) is tried again when
    an API server that answered this process stops answering (default 120: an API server restart
    or a control-plane upgrade). Nothing waits on the pod meanwhile: the operator cannot record
    the result before the API server is back either."""


def _csv_char(name: str) -> AfterValidator:
    def check(value: str) -> str:
        value = "\t" if value in ("\\t", "tab", "TAB") else value
        if not is_csv_char(value):
            raise ValueError(
                f"the CSV {name} must be one printable ASCII character or a tab, not {value!r}"
            )
        return value

    return AfterValidator(check)


def _encoding(name: str) -> str:
    if not is_supported_encoding(name):
        raise ValueError(
            f"unsupported encoding {name!r}: an ASCII-compatible text encoding "
            "(utf-8, latin-1, cp1252, ...) is needed"
        )
    return name


class CsvOptions(EnvSettings, env_prefix=PREFIX + "CSV_", component="processor"):
    """How the input CSV is read."""

    delimiter: Annotated[str, _csv_char("delimiter")] = ","
    """EXPORTJOBS_CSV_DELIMITER / --delimiter. One character; `\\t` or `tab` for a tab."""
    header: Flag = True
    """EXPORTJOBS_CSV_HEADER / --no-header. Whether the first row names the columns; without
    one, the columns are named f0, f1, ..."""
    quote: Annotated[str, _csv_char("quote")] = '"'
    """EXPORTJOBS_CSV_QUOTE / --quote. One character."""
    encoding: Annotated[str, AfterValidator(_encoding)] = "utf-8"
    """EXPORTJOBS_CSV_ENCODING / --encoding. The input's text encoding; output is always UTF-8."""
    column_types: Literal["auto", "string"] = Field(
        default="auto", validation_alias=PREFIX + "COLUMN_TYPES"
    )
    """EXPORTJOBS_COLUMN_TYPES. `auto` (default): every column is text for csv/csv.gz, inferred
    int/float/bool (and date/timestamp for parquet) for jsonl/parquet; `string`: text always.
    See docs/processor.md, "Column types"."""

    @model_validator(mode="after")
    def _check(self) -> CsvOptions:
        if self.delimiter == self.quote:
            raise ValueError("the CSV delimiter and quote must differ")
        return self


def _part_size(size: int) -> int:
    if size < S3_MIN_PART_SIZE:
        raise ValueError(f"the S3 part size must be at least {S3_MIN_PART_SIZE}")
    return size


class Buffers(EnvSettings, env_prefix=PREFIX, component="processor"):
    """How much is read, parsed, compressed and uploaded at once: the memory an export may use
    (`ProcessorSettings.memory_bound`)."""

    block_size: int = Field(default=4 * MiB, ge=1, validation_alias=PREFIX + "BLOCK_SIZE_BYTES")
    """EXPORTJOBS_BLOCK_SIZE_BYTES. CSV parser block (default 4 MiB): the unit of parallel
    parsing and of memory, and the longest row accepted (a longer row is BAD_CSV). Fixed for
    the whole export, so a long row never makes the export start over."""
    blocks_ahead: int = Field(default=2, ge=1)
    """EXPORTJOBS_BLOCKS_AHEAD. Parser blocks read ahead of the batches taken from it (default
    2); with the block size this bounds the input held in memory. Parsed batches wait in a
    queue of QUEUED_BATCHES after these."""
    part_size: Annotated[int, AfterValidator(_part_size)] = Field(
        default=8 * MiB, validation_alias=PREFIX + "S3_PART_SIZE_BYTES"
    )
    """EXPORTJOBS_S3_PART_SIZE_BYTES. First multipart part size (default 8 MiB, at least 5 MiB).
    Doubles every 1000 parts, so the 10000-part limit is never reached (>80 GB works)."""
    upload_concurrency: int = Field(
        default=2, ge=1, validation_alias=PREFIX + "S3_UPLOAD_CONCURRENCY"
    )
    """EXPORTJOBS_S3_UPLOAD_CONCURRENCY. Parts uploaded at once (default 2); memory holds this
    many parts plus the one being filled."""
    read_chunk_size: int = Field(
        default=4 * MiB, ge=1, validation_alias=PREFIX + "S3_READ_CHUNK_BYTES"
    )
    """EXPORTJOBS_S3_READ_CHUNK_BYTES. Size of each ranged GET (default 4 MiB, one parser block:
    the parser's blocks are views of the GETs, so a block never holds a larger GET in memory)."""
    read_ahead: int = Field(default=3, ge=1, validation_alias=PREFIX + "S3_READ_AHEAD")
    """EXPORTJOBS_S3_READ_AHEAD. Ranged GETs in flight ahead of the parser (default 3)."""
    s3_max_attempts: int = Field(default=5, ge=1)
    """EXPORTJOBS_S3_MAX_ATTEMPTS. botocore attempts per S3 request (default 5, standard mode)."""
    gzip_level: int = Field(default=1, ge=0, le=3)
    """EXPORTJOBS_GZIP_LEVEL. ISA-L deflate level for csv.gz, 0..3 (default 1: about the size of
    `gzip -1` at ~3.5x its speed; 3 is the smallest)."""
    gzip_threads: int = Field(default=2, ge=1)
    """EXPORTJOBS_GZIP_THREADS. Threads compressing csv.gz chunks in parallel (default 2)."""
    memory_limit: int = Field(default=300 * MiB, validation_alias=PREFIX + "MEMORY_LIMIT_BYTES")
    """EXPORTJOBS_MEMORY_LIMIT_BYTES. The most memory the buffers above may add up to, with the
    interpreter and libraries (default 300 MiB): settings whose bound (`memory_bound()`) is
    higher are refused at start (INVALID_CONFIG). See docs/processor.md, "Memory"."""


class ProcessorSettings(EnvSettings, env_prefix=PREFIX, component="processor"):
    """Everything one export needs. Sizes in bytes."""

    source_uri: str = ""
    """EXPORTJOBS_SOURCE_URI / --source. `s3://bucket/key` or `file:///path` of the input CSV."""
    destination_uri: str = ""
    """EXPORTJOBS_DESTINATION_URI / --destination. `s3://bucket/prefix/` or `file:///dir/`."""
    export_format: str = Field(default="", validation_alias=PREFIX + "FORMAT")
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
    termination_message_path: Path | None = None
    """EXPORTJOBS_TERMINATION_MESSAGE_PATH / --termination-message-path. Unset: Kubernetes'
    /dev/termination-log, written only when it exists, so a run by hand leaves /dev alone."""
    csv: CsvOptions = CsvOptions()
    """How the input CSV is read."""
    buffers: Buffers = Buffers()
    """Buffer sizes and concurrency (memory)."""
    kube: KubeSettings = KubeSettings()
    """Progress reporting to the ExportJob."""

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

    @model_validator(mode="after")
    def _check(self) -> ProcessorSettings:
        for name, value in (
            ("source (EXPORTJOBS_SOURCE_URI / --source)", self.source_uri),
            ("destination (EXPORTJOBS_DESTINATION_URI / --destination)", self.destination_uri),
            ("format (EXPORTJOBS_FORMAT / --format)", self.export_format),
        ):
            if not value:
                raise ValueError(f"missing {name}")
        if self.export_format not in FORMATS:
            raise ValueError(
                f"unknown format {self.export_format!r} (expected one of {', '.join(FORMATS)})"
            )
        if self.memory_bound() > self.buffers.memory_limit:
            raise ValueError(
                f"these settings let the processor use up to {self.memory_bound() // MiB} MiB, "
                f"more than EXPORTJOBS_MEMORY_LIMIT_BYTES ({self.buffers.memory_limit // MiB} "
                "MiB): lower the block size, blocks ahead, read ahead, part size or upload "
                "concurrency"
            )
        return self
