"""One way to reach the Kubernetes API from the webhook and the operator: a kubernetes_asyncio
ApiClient from in-cluster credentials or a kubeconfig, with explicit timeouts."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def new_api_client(*, kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for in-cluster use, or for `kubeconfig` / `$KUBECONFIG` when given.

    The caller closes it (`await api.close()`), typically in an aiohttp cleanup context.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration=configuration)
