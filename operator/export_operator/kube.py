"""One way to reach the Kubernetes API from the webhook and the operator: a kubernetes_asyncio
ApiClient from in-cluster credentials or a kubeconfig, with explicit timeouts."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def new_api_client(
    *, kubeconfig: str | None = None, trust_env: bool = True
) -> client.ApiClient:
    """An ApiClient for in-cluster use, or for `kubeconfig` / `$KUBECONFIG` when given.

    `trust_env=False` stops the client from consulting `~/.netrc` and the proxy variables on every
    request: kubernetes_asyncio's aiohttp session does both in a worker thread per call, which
    about doubles the client's CPU per API call (measured in bench/bench_webhook.py).

    The caller closes it (`await api.close()`), typically in an aiohttp cleanup context.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = client.ApiClient(configuration=configuration)
    if not trust_env:
        # kubernetes_asyncio hard-codes trust_env=True on its session; aiohttp reads this flag
        # per request, so clearing it is enough.
        api.rest_client.pool_manager._trust_env = False
    return api
