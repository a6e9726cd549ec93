"""Least-privilege S3 permissions of each component, as IAM policy documents.

What each component does with S3, and so the only actions its credentials need:

- the **processor** reads its source (GET, HEAD; of a given version too) under the allowed
  source prefixes, and writes
  under the allowed destination prefixes: single and multipart uploads (create, upload part,
  part copy for split exports, complete, abort), reads back what it wrote (the verify after a
  lost Complete, the parts a split export composes), lists the multipart uploads in progress
  in the destination buckets (to abort its own leftovers) and deletes its temporary range
  objects;
- the **webhook** presigns download URLs of results: a URL works only if the signer may GET the
  object, so it reads the destination prefixes and nothing else;
- the **operator** presigns the link in the completion callback (the destinations) and, with
  `EXPORTJOBS_OPERATOR_HEAD_SOURCE`, HEADs sources to size the Job (the sources).

The same documents work for AWS IAM and MinIO (which reads IAM's policy language):
`hack/stack.py` gives each component of the demo and the e2e tier a MinIO user with its document
(`s3-admin`, hack/s3admin), and docs/security.md shows them for AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from export_operator.resource import S3Location, parse_s3_uri

VERSION = "2012-10-17"

WRITE_ACTIONS = (
    "s3:PutObject",
    "s3:GetObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:DeleteObject",
)
"""On the objects under a destination prefix (PutObject covers CreateMultipartUpload, UploadPart,
UploadPartCopy and CompleteMultipartUpload)."""


def _prefixes(uris: Iterable[str]) -> list[S3Location]:
    """Each `s3://bucket/prefix/` URI's bucket and key prefix; S3UriError for another URI."""
    return [parse_s3_uri(uri, prefix=True) for uri in uris]


def _objects(prefixes: Iterable[str]) -> list[str]:
    return sorted({f"arn:aws:s3:::{p.bucket}/{p.key}*" for p in _prefixes(prefixes)})


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": [s for s in statements if s["Resource"]]}


def processor_policy(sources: Iterable[str], destinations: Iterable[str]) -> dict[str, Any]:
    """Read the sources; write, read back, list the uploads of and delete under destinations."""
    destinations = list(destinations)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadSources",
            "Effect": "Allow",
            # GetObjectVersion: reads of one version (spec.source.versionId, and every read of
            # a split export in a versioned bucket: the version its prepare step pinned).
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": _objects(sources),
        },
        {
            "Sid": "WriteDestinations",
            "Effect": "Allow",
            "Action": list(WRITE_ACTIONS),
            "Resource": _objects(destinations),
        },
    ]
    # A bucket-level action that takes no prefix condition (neither IAM nor MinIO offer one for
    # it): it tells the keys of the uploads in progress in the destination buckets, no data.
    statements.append(
        {
            "Sid": "ListUploadsInProgress",
            "Effect": "Allow",
            "Action": ["s3:ListBucketMultipartUploads"],
            "Resource": sorted({f"arn:aws:s3:::{p.bucket}" for p in _prefixes(destinations)}),
        }
    )
    return _document(statements)


def reader_policy(prefixes: Iterable[str]) -> dict[str, Any]:
    """GET (and so presign) the objects under `prefixes`, nothing else."""
    return _document(
        [
            {
                "Sid": "Read",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(prefixes),
            }
        ]
    )


def component_policies(
    sources: Iterable[str], destinations: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The document of each component: processor, webhook, operator."""
    sources, destinations = list(sources), list(destinations)
    return {
        "processor": processor_policy(sources, destinations),
        "webhook": reader_policy(destinations),
        "operator": reader_policy([*destinations, *sources]),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m export_operator.s3policy --sources S3URI... --destinations S3URI...`: print
    the three documents as one JSON object."""
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sources", nargs="+", required=True, metavar="S3_PREFIX")
    parser.add_argument("--destinations", nargs="+", required=True, metavar="S3_PREFIX")
    args = parser.parse_args(argv)
    print(json.dumps(component_policies(args.sources, args.destinations), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
