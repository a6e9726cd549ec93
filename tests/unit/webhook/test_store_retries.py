"""KubeExportStore.create repeats a create the API server did not answer (a timeout, a 429, a
5xx) before the webhook answers 503: the soak's hour at load 24 got one 503 for a valid POST."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator import resource
from export_operator.kube import KubeError, collection_path
from export_operator.webhook import store as store_module
from export_operator.webhook.store import (
    AlreadyExistsError,
    KubeExportStore,
    StoreRejectedError,
    StoreUnavailableError,
)
from export_processor.common import Backoff
from tests.support.fake_kube import FakeKube

pytestmark = pytest.mark.unit

NS = "exports"
COLLECTION = collection_path(resource.API_VERSION, resource.PLURAL, NS)


def body(name: str = "api-1", source: str = "s3://in/a.csv") -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": "ExportJob",
        "metadata": {"name": name, "namespace": NS, "annotations": {"a": "1"}},
        "spec": {"source": source, "format": "csv"},
    }


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "CREATE_BACKOFF", Backoff(base=0.0, cap=0.0))


async def test_a_create_without_an_answer_is_tried_again() -> None:
    kube = FakeKube()
    kube.fail("create", KubeError(429, "too many requests"))
    stored = await KubeExportStore(kube=kube, namespace=NS).create(body())
    assert stored["spec"]["source"] == "s3://in/a.csv"
    assert [verb for verb, _, _ in kube.calls].count("create") == 1


async def test_two_tries_without_an_answer_are_unavailable() -> None:
    kube = FakeKube()
    kube.fail("create", KubeError(0, "read timed out"), KubeError(504, "timeout"))
    with pytest.raises(StoreUnavailableError):
        await KubeExportStore(kube=kube, namespace=NS).create(body())


async def test_a_first_try_that_went_through_is_stored_not_a_conflict() -> None:
    kube = FakeKube()
    # The first try is stored on the server, but its answer is lost (a read timeout)...
    await kube.create(COLLECTION, body())
    kube.fail("create", KubeError(0, "read timed out"))
    # ...so the second try meets our own object: 409, which is ours, stored.
    stored = await KubeExportStore(kube=kube, namespace=NS).create(body())
    assert stored["metadata"]["name"] == "api-1" and stored["spec"]["source"] == "s3://in/a.csv"


async def test_a_first_answer_of_409_is_a_replay_and_a_different_object_is_not_ours() -> None:
    kube = FakeKube()
    store = KubeExportStore(kube=kube, namespace=NS)
    await kube.create(COLLECTION, body(source="s3://in/other.csv"))
    with pytest.raises(AlreadyExistsError):
        await store.create(body())  # no lost answer: the name was taken before
    kube.fail("create", KubeError(0, "read timed out"))
    with pytest.raises(AlreadyExistsError):
        await store.create(body())  # a lost answer, but what is stored is another request


async def test_a_refusal_is_not_tried_again() -> None:
    kube = FakeKube()
    kube.fail("create", KubeError(422, "spec.format: Unsupported value"))
    with pytest.raises(StoreRejectedError):
        await KubeExportStore(kube=kube, namespace=NS).create(body())
    assert not [c for c in kube.calls if c[0] == "create"]
