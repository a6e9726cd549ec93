"""Sample notification bodies, after the examples in the AWS and MinIO documentation
(AWS S3 "Event message structure", "Amazon EventBridge: Object Created", MinIO "Publish Events to
Webhook"), with keys chosen to exercise URL decoding."""

from __future__ import annotations

import copy
from typing import Any

AWS_S3_EVENT: dict[str, Any] = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "testConfigRule",
                "bucket": {
                    "name": "mybucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::mybucket",
                },
                "object": {
                    "key": "HappyFace.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}

AWS_TEST_EVENT: dict[str, Any] = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "mybucket",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}

EVENTBRIDGE_OBJECT_CREATED: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {
            "key": "example-key",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "00617F08299329D189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}

MINIO_EVENT: dict[str, Any] = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "images/myphoto.jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2019-09-10T17:41:54Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "AKIAIOSFODNN7EXAMPLE"},
            "requestParameters": {
                "accessKey": "AKIAIOSFODNN7EXAMPLE",
                "region": "",
                "sourceIPAddress": "192.168.56.192",
            },
            "responseElements": {
                "x-amz-request-id": "15C3249451E12784",
                "x-minio-deployment-id": "751a8ba6-acb2-42f6-a297-4cdf1cf1fa4f",
                "x-minio-origin-endpoint": "http://192.168.97.83:9000",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {
                    "name": "images",
                    "ownerIdentity": {"principalId": "AKIAIOSFODNN7EXAMPLE"},
                    "arn": "arn:aws:s3:::images",
                },
                "object": {
                    "key": "myphoto.jpg",
                    "size": 6474,
                    "eTag": "430f89010c77aa34fc8760696da62d08-1",
                    "contentType": "image/jpeg",
                    "userMetadata": {"content-type": "image/jpeg"},
                    "versionId": "",
                    "sequencer": "15C32494AA8F8EA7",
                },
            },
            "source": {"host": "192.168.56.192", "port": "", "userAgent": "MinIO (linux; amd64)"},
        }
    ],
}

# (key as the event carries it, the key it names)
ENCODED_KEYS = [
    ("HappyFace.jpg", "HappyFace.jpg"),
    ("my+report+2024.csv", "my report 2024.csv"),
    ("dir%2Fsub%2Ffile.csv", "dir/sub/file.csv"),
    ("plus%2Bsign.csv", "plus+sign.csv"),
    ("caf%C3%A9+%E6%97%A5%E6%9C%AC.csv", "café 日本.csv"),
    ("percent%2520literal.csv", "percent%20literal.csv"),
]


def s3_event(
    *, bucket: str = "mybucket", key: str = "data.csv", version: str | None = "v1"
) -> dict[str, Any]:
    """The AWS sample with another bucket, (encoded) key and version."""
    event = copy.deepcopy(AWS_S3_EVENT)
    obj = event["Records"][0]["s3"]["object"]
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    obj["key"] = key
    if version is None:
        del obj["versionId"]
    else:
        obj["versionId"] = version
    return event


def minio_event(*, bucket: str, key: str) -> dict[str, Any]:
    event = copy.deepcopy(MINIO_EVENT)
    event["Key"] = f"{bucket}/{key}"
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    return event
