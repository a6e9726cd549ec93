"""POST/GET/DELETE /v1/exports over the in-memory store: contract, auth, bad input, 503."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator import resource
from tests.support.webhook_harness import AUTH, Harness, MakeHarness

SOURCE = "s3://exports-input/data/report 1.csv"


async def post(h: Harness, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await h.client.post("/v1/exports", json=body, headers={**AUTH, **(headers or {})})


async def test_post_stores_an_export_and_answers_202(harness: Harness) -> None:
    response = await post(harness, {"source": SOURCE, "format": "parquet"})
    assert response.status == 202
    body = await response.json()
    assert body == {
        "id": body["id"],
        "status": "Pending",
        "status_url": f"/v1/exports/{body['id']}",
    }
    assert response.headers["Location"] == body["status_url"]
    assert int(response.headers["Retry-After"]) > 0
    stored = harness.store.objects[body["id"]]
    assert stored["metadata"]["namespace"] == "ns"
    assert stored["metadata"]["labels"][resource.LABEL_SOURCE_KIND] == "api"
    assert stored["spec"] == {"source": {"uri": SOURCE}, "format": "parquet", "owner": "default"}


async def test_post_with_every_field(harness: Harness) -> None:
    body = {
        "source": {"uri": SOURCE, "version_id": "v9", "etag": "abc"},
        "format": "csv.gz",
        "destination": "s3://exports-output/reports/",
        "csv": {"delimiter": ";", "header": False, "quote": "'", "encoding": "latin-1"},
    }
    response = await post(harness, body)
    assert response.status == 202
    spec = harness.store.objects[(await response.json())["id"]]["spec"]
    assert spec == {
        "source": {"uri": SOURCE, "versionId": "v9", "etag": "abc"},
        "format": "csv.gz",
        "destination": {"uri": "s3://exports-output/reports/"},
        "csv": {"delimiter": ";", "header": False, "quote": "'", "encoding": "latin-1"},
        "owner": "default",
    }


async def test_dataset_id_resolves_through_the_template(make_harness: MakeHarness) -> None:
    h = await make_harness(dataset_uri_template="s3://datasets/v2/{dataset_id}/data.csv")
    dataset = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
    response = await post(h, {"dataset_id": dataset, "format": "jsonl"})
    assert response.status == 202
    spec = h.store.objects[(await response.json())["id"]]["spec"]
    lower = dataset.lower()
    assert spec["source"] == {"uri": f"s3://datasets/v2/{lower}/data.csv"}
    assert spec["datasetId"] == lower


async def test_default_destination_applies(make_harness: MakeHarness) -> None:
    h = await make_harness(destination_uri="s3://out/default/")
    response = await post(h, {"source": SOURCE, "format": "csv"})
    spec = h.store.objects[(await response.json())["id"]]["spec"]
    assert spec["destination"] == {"uri": "s3://out/default/"}


async def test_idempotency_key_same_body_same_id(harness: Harness) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await post(harness, {"source": SOURCE, "format": "csv"}, key)
    second = await post(harness, {"format": "csv", "source": SOURCE}, key)
    assert first.status == second.status == 202
    assert (await first.json())["id"] == (await second.json())["id"]
    assert (await first.json())["id"] == resource.export_name_for_idempotency_key("order-42")
    assert len(harness.store.objects) == 1


async def test_idempotency_key_other_body_is_422(harness: Harness) -> None:
    key = {"Idempotency-Key": "order-43"}
    assert (await post(harness, {"source": SOURCE, "format": "csv"}, key)).status == 202
    response = await post(harness, {"source": SOURCE, "format": "jsonl"}, key)
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "idempotency-key-reused"
    assert response.content_type == "application/problem+json"
    assert len(harness.store.objects) == 1
    assert next(iter(harness.store.objects.values()))["spec"]["format"] == "csv"


async def test_idempotent_replay_reads_back_when_the_cache_has_not_seen_it(
    harness: Harness,
) -> None:
    key = {"Idempotency-Key": "order-44"}
    assert (await post(harness, {"source": SOURCE, "format": "csv"}, key)).status == 202
    harness.cache.informer.replace([], resource_version="1")  # another replica created it
    response = await post(harness, {"source": SOURCE, "format": "csv"}, key)
    assert response.status == 202


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}],
)
async def test_post_without_valid_token_is_401_and_creates_nothing(
    harness: Harness, headers: dict[str, str]
) -> None:
    response = await harness.client.post(
        "/v1/exports", json={"source": SOURCE, "format": "csv"}, headers=headers
    )
    assert response.status == 401
    assert (await response.json())["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert harness.store.create_calls == 0


async def test_second_configured_token_works(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/exports",
        json={"source": SOURCE, "format": "csv"},
        headers={"Authorization": "Bearer second-token"},
    )
    assert response.status == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source": SOURCE, "format": "xlsx"}, 422, "unknown-format"),
        ({"source": SOURCE}, 422, "unknown-format"),
        ({"source": "https://example.com/x.csv", "format": "csv"}, 422, "invalid-s3-uri"),
        ({"source": "s3://bucket/", "format": "csv"}, 422, "invalid-s3-uri"),
        ({"source": "s3://bucket/a\x01b.csv", "format": "csv"}, 422, "invalid-s3-uri"),
        ({"source": "s3://bucket//lead.csv", "format": "csv"}, 422, "invalid-s3-key"),
        ({"source": {"uri": 5}, "format": "csv"}, 422, "invalid-s3-uri"),
        ({"source": SOURCE, "format": "csv", "destination": "s3://b/no-slash"}, 422, None),
        ({"source": SOURCE, "format": "csv", "extra": 1}, 422, "invalid-request"),
        (
            {
                "source": SOURCE,
                "dataset_id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                "format": "csv",
            },
            422,
            "invalid-request",
        ),
        ({"dataset_id": "not-a-uuid", "format": "csv"}, 422, "invalid-request"),
        ({"source": SOURCE, "format": "csv", "csv": {"delimiter": ";;"}}, 422, "invalid-request"),
        ([1, 2], 422, "invalid-request"),
        ({"source": SOURCE, "format": "csv", "csv": None}, 422, "invalid-request"),
        ({"source": SOURCE, "format": "csv", "destination": None}, 422, "invalid-s3-uri"),
        ({"source": SOURCE, "dataset_id": None, "format": "csv"}, 422, "invalid-request"),
        ({"source": {"uri": SOURCE, "etag": None}, "format": "csv"}, 422, "invalid-request"),
    ],
)
async def test_bad_requests_are_problems_and_create_nothing(
    harness: Harness, body: Any, status: int, code: str | None
) -> None:
    response = await post(harness, body)
    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == status and problem["detail"]
    assert problem["type"].endswith(problem["code"])
    if code:
        assert problem["code"] == code
    assert harness.store.create_calls == 0


async def test_malformed_json_is_400(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/exports", data=b'{"source": ', headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["code"] == "malformed-json"


async def test_wrong_content_type_is_415(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/exports", data=b"source=x", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert (await response.json())["code"] == "unsupported-media-type"
    assert harness.store.create_calls == 0


async def test_body_over_the_limit_is_413(make_harness: MakeHarness) -> None:
    h = await make_harness(max_body_bytes=2048)
    big = {"source": SOURCE, "format": "csv", "csv": {"encoding": "x" * 4000}}
    response = await post(h, big)
    assert response.status == 413
    assert (await response.json())["code"] == "body-too-large"
    assert h.store.create_calls == 0


async def test_chunked_body_over_the_limit_is_413(make_harness: MakeHarness) -> None:
    h = await make_harness(max_body_bytes=2048)

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    response = await h.client.post(
        "/v1/exports", data=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert h.store.create_calls == 0


async def test_api_server_down_is_503_with_retry_after(harness: Harness) -> None:
    harness.store.down = True
    response = await post(harness, {"source": SOURCE, "format": "csv"})
    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 0
    assert (await response.json())["code"] == "api-server-unavailable"
    assert harness.store.objects == {}


async def test_get_reads_the_cache_and_presigns_results(harness: Harness) -> None:
    response = await post(
        harness, {"source": SOURCE, "format": "csv", "destination": "s3://exports-output/x/"}
    )
    name = (await response.json())["id"]
    got = await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
    assert got.status == 200
    view = await got.json()
    assert view["status"] == "Pending" and view["source"] == SOURCE and view["result"] is None
    harness.store.set_status(
        name,
        {
            "phase": "Succeeded",
            "completionTime": "2030-01-01T00:00:00Z",
            "result": {"uri": f"s3://exports-output/x/{name}/data.csv", "bytes": 10, "rows": 2},
        },
    )
    view = await (await harness.client.get(f"/v1/exports/{name}", headers=AUTH)).json()
    assert view["status"] == "Succeeded"
    assert view["completion_time"] == "2030-01-01T00:00:00Z"
    url = view["result"]["download_url"]
    assert url.startswith(f"http://127.0.0.1:9/exports-output/x/{name}/data.csv?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    assert view["result"]["rows"] == 2


async def test_get_unknown_is_404_problem(harness: Harness) -> None:
    for name in ("nope", "UPPER", "x" * 80):
        response = await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
        assert response.status == 404
        assert (await response.json())["code"] == "not-found"


async def test_get_needs_a_token(harness: Harness) -> None:
    assert (await harness.client.get("/v1/exports/x")).status == 401
    assert (await harness.client.get("/v1/exports")).status == 401


async def test_list_filters_by_phase_and_paginates(harness: Harness) -> None:
    names = []
    for i in range(7):
        response = await post(harness, {"source": f"s3://in-bucket/{i}.csv", "format": "csv"})
        names.append((await response.json())["id"])
    for name in names[:3]:
        harness.store.set_status(name, {"phase": "Running"})
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": "2", **({"continue": token} if token else {})}
        page = await (await harness.client.get("/v1/exports", params=query, headers=AUTH)).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        token = page["continue"]
        if token is None:
            break
    assert seen == names[::-1]  # newest first
    running = await (
        await harness.client.get("/v1/exports", params={"phase": "Running"}, headers=AUTH)
    ).json()
    assert sorted(i["id"] for i in running["items"]) == sorted(names[:3])
    assert running["continue"] is None


@pytest.mark.parametrize(
    "query", [{"phase": "Done"}, {"limit": "0"}, {"limit": "x"}, {"continue": "!!!"}]
)
async def test_list_bad_query_is_422(harness: Harness, query: dict[str, str]) -> None:
    response = await harness.client.get("/v1/exports", params=query, headers=AUTH)
    assert response.status == 422
    assert response.content_type == "application/problem+json"


async def test_delete_sets_cancel_and_answers_202(harness: Harness) -> None:
    name = (await (await post(harness, {"source": SOURCE, "format": "csv"})).json())["id"]
    response = await harness.client.delete(f"/v1/exports/{name}", headers=AUTH)
    assert response.status == 202
    assert harness.store.objects[name]["spec"]["cancel"] is True
    assert (await response.json())["cancel_requested"] is True
    view = await (await harness.client.get(f"/v1/exports/{name}", headers=AUTH)).json()
    assert view["cancel_requested"] is True


async def test_delete_unknown_is_404_and_down_is_503(harness: Harness) -> None:
    assert (await harness.client.delete("/v1/exports/nope", headers=AUTH)).status == 404
    harness.store.down = True
    # (Another id: "nope" is remembered absent for a moment, without asking the API again.)
    response = await harness.client.delete("/v1/exports/nope-2", headers=AUTH)
    assert response.status == 503 and "Retry-After" in response.headers


async def test_unknown_route_and_method_are_problems(harness: Harness) -> None:
    response = await harness.client.get("/v2/nothing")
    assert response.status == 404 and response.content_type == "application/problem+json"
    response = await harness.client.put("/v1/exports", headers=AUTH)
    assert response.status == 405 and response.content_type == "application/problem+json"
    assert "POST" in response.headers["Allow"]
