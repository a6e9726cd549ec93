"""Issue 24: a body sent slowly is cut off after `body_timeout_seconds` (408), for an
authenticated caller as for anyone; `/readyz` tells an unauthenticated caller only ready or not."""

from __future__ import annotations

from export_operator.webhook.store import StoreUnavailableError
from tests.support import hostile_http
from tests.support.webhook_harness import AUTH, TOKEN, MakeHarness


async def test_an_authenticated_slow_body_times_out(make_harness: MakeHarness) -> None:
    h = await make_harness(body_timeout_seconds=1.0)
    server = h.client.server
    for target in ("/v1/exports", "/v1/events/s3?format=csv"):
        status, elapsed = await hostile_http.send_slowly(
            str(server.host), int(server.port or 0), token=TOKEN, target=target,
            interval=0.2, limit=10,
        )  # fmt: skip
        assert status == 408, (target, status, elapsed)
        assert elapsed < 3, elapsed
    assert h.store.create_calls == 0


async def test_readyz_tells_an_unauthenticated_caller_nothing_more(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    anonymous = await (await h.client.get("/readyz")).json()
    assert anonymous == {"status": "ready"}
    admin = await (await h.client.get("/readyz", headers=AUTH)).json()
    assert admin == {"status": "ready", "cached_exports": 0}

    async def refused() -> None:
        raise StoreUnavailableError("API server unreachable: connect to 10.96.0.1:443 refused")

    h.store.ping = refused  # type: ignore[method-assign]
    response = await h.client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert "10.96" not in str(body) and "API server not answering" in body["detail"]
