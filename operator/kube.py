"""A small Kubernetes REST client on aiohttp, for the few calls the handlers make themselves.

kopf authenticates through its login handlers and keeps its own sessions private; the handlers
need Deployments, Pods and Secrets, so they get a client built from the same `ConnectionInfo`.
Only JSON, only what the operator needs: get, list, create, merge-patch.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from streamscale.operator import constants

logger = logging.getLogger(__name__)

Json = dict[str, Any]


class KubeError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class Kube:
    """JSON calls to one API server with the credentials of one `kopf.ConnectionInfo`."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        with warnings.catch_warnings():
            # kopf warns that its BasicAuth helper is deprecated; the value is still what we need.
            warnings.simplefilter("ignore", DeprecationWarning)
            auth = info.as_aiohttp_basic_auth()
        # Hundreds of poll daemons share this session: the time a request waits for a free
        # connection must not count against it, only connecting and reading do.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._session.request(
            method, self.server + path, data=data, params=params, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, method, path, text)
            result: Json = json.loads(text) if text else {}
            return result

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Json:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Json | None:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: Json) -> Json:
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )


def deployments_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    return f"{base}/{name}" if name else base


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def custom_path(namespace: str, name: str, *, subresource: str = "") -> str:
    path = f"{custom_list_path(namespace)}/{name}"
    return f"{path}/{subresource}" if subresource else path


def custom_list_path(namespace: str) -> str:
    """The StreamConsumers of one namespace."""
    return f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{namespace}/{constants.PLURAL}"


def selector_string(match_labels: Mapping[str, str]) -> str:
    """`matchLabels` as a `labelSelector` query parameter."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def matches(labels: Mapping[str, str] | None, match_labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy `matchLabels` (checked client-side as well: cheap and certain)."""
    labels = labels or {}
    return all(labels.get(key) == value for key, value in match_labels.items())
