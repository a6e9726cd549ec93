"""Parsing every supported event shape, with the documentation's sample events."""

from __future__ import annotations

import copy

import pytest

from export_operator.webhook.events import EventError, EventSource, parse_event
from tests.support import samples


def test_aws_sample_event_gives_one_record() -> None:
    parsed = parse_event(samples.AWS_S3_EVENT, source=EventSource.S3)
    assert parsed.source == EventSource.S3
    [record] = parsed.records
    assert record.location.uri == "s3://mybucket/HappyFace.jpg"
    assert record.version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert record.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert record.version == record.version_id


@pytest.mark.parametrize(("raw", "key"), samples.ENCODED_KEYS)
def test_s3_keys_are_url_decoded_like_unquote_plus(raw: str, key: str) -> None:
    parsed = parse_event(samples.s3_event(key=raw), source=EventSource.S3)
    assert parsed.records[0].location.key == key


@pytest.mark.parametrize(("raw", "key"), samples.ENCODED_KEYS)
def test_minio_keys_are_url_decoded(raw: str, key: str) -> None:
    parsed = parse_event(samples.minio_event(bucket="images", key=raw), source=EventSource.S3)
    assert parsed.source == EventSource.MINIO
    assert parsed.records[0].location.key == key


def test_minio_sample_has_no_version_so_the_sequencer_tells_uploads_apart() -> None:
    parsed = parse_event(samples.MINIO_EVENT, source=EventSource.S3)
    [record] = parsed.records
    assert record.location.uri == "s3://images/myphoto.jpg"
    assert record.version_id is None
    assert record.version == "15C32494AA8F8EA7"


def test_eventbridge_object_created_keeps_the_key_as_is() -> None:
    event = copy.deepcopy(samples.EVENTBRIDGE_OBJECT_CREATED)
    event["detail"]["object"]["key"] = "a+b c%2F.csv"
    parsed = parse_event(event, source=EventSource.S3)
    assert parsed.source == EventSource.EVENTBRIDGE
    [record] = parsed.records
    assert record.location.bucket == "amzn-s3-demo-bucket1"
    assert record.location.key == "a+b c%2F.csv"
    assert record.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"


def test_eventbridge_other_detail_types_are_ignored() -> None:
    event = copy.deepcopy(samples.EVENTBRIDGE_OBJECT_CREATED)
    event["detail-type"] = "Object Deleted"
    parsed = parse_event(event, source=EventSource.S3)
    assert parsed.records == [] and parsed.ignored == ["Object Deleted"]


def test_eventbridge_from_another_source_is_refused() -> None:
    event = copy.deepcopy(samples.EVENTBRIDGE_OBJECT_CREATED)
    event["source"] = "aws.ec2"
    with pytest.raises(EventError):
        parse_event(event, source=EventSource.S3)


def test_test_event_is_ignored() -> None:
    parsed = parse_event(samples.AWS_TEST_EVENT, source=EventSource.SNS)
    assert parsed.records == [] and parsed.ignored == ["s3:TestEvent"]


def test_non_create_records_are_ignored_and_creates_kept() -> None:
    event = samples.s3_event()
    removed = copy.deepcopy(event["Records"][0])
    removed["eventName"] = "ObjectRemoved:Delete"
    event["Records"].insert(0, removed)
    parsed = parse_event(event, source=EventSource.S3)
    assert len(parsed.records) == 1 and parsed.ignored == ["ObjectRemoved:Delete"]


def test_version_falls_back_to_sequencer_then_etag() -> None:
    event = samples.s3_event(version=None)
    assert parse_event(event, source=EventSource.S3).records[0].version == "0055AED6DCD90281E5"
    del event["Records"][0]["s3"]["object"]["sequencer"]
    record = parse_event(event, source=EventSource.S3).records[0]
    assert record.version == "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"hello": "world"},
        {"Records": "nope"},
        {"Records": [1]},
        {"Records": [{"eventName": "ObjectCreated:Put"}]},
        {"Records": [{"s3": {}}]},
    ],
)
def test_malformed_events_raise(body: object) -> None:
    with pytest.raises(EventError) as caught:
        parse_event(body, source=EventSource.S3)
    assert not caught.value.bad_key


@pytest.mark.parametrize(
    ("bucket", "key"),
    [("mybucket", "bad%0Akey.csv"), ("mybucket", "%2Fleading-slash.csv"), ("Bad_Bucket", "k")],
)
def test_invalid_keys_and_buckets_are_flagged(bucket: str, key: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_event(samples.s3_event(bucket=bucket, key=key), source=EventSource.S3)
    assert caught.value.bad_key
