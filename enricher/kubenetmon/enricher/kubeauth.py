"""The two API calls the auth callout service makes: a TokenReview, and a GET of the token's pod.

Why it exists: ``identity`` decides from the API's answers; this module only asks, with the official
client (synchronous: callers run it in a thread), and returns the API's JSON as plain dicts. The
service account needs ``create`` on ``tokenreviews`` and ``get`` on ``pods`` (k8s/base/auth/rbac.yaml).

Besides ``watch``, the only module that imports ``kubernetes``. An unreachable or failing API server
raises ``Unavailable``: the connection is refused and the agent tries again.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kubenetmon.enricher.watch import WatchSettings, api_client

NOT_FOUND = 404


class Unavailable(Exception):
    """The API server did not answer (or answered with an error other than "not found")."""


class KubeAuth:
    """TokenReview and pod reads against one API server."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        # one retry (a kept-alive connection the server dropped); more would outlast the server's
        # authorization timeout, which then refuses the agent without a reason counted here
        self._api = api_client(settings, retries=1)
        self._auth = client.AuthenticationV1Api(self._api)
        self._core = client.CoreV1Api(self._api)

    def review(self, token: str, *, audience: str) -> dict[str, Any]:
        """The TokenReview of ``token`` for ``audience`` (its ``status`` says who the token is)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        try:
            # a plain dict body and _preload_content=False: the API's JSON in and out, no models
            response: Any = self._auth.create_token_review(
                body,  # type: ignore[arg-type]
                _preload_content=False,
                _request_timeout=self.settings.request_timeout_s,
            )
            return _json(response.data)
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"TokenReview failed: {_describe(exc)}") from None

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Pod ``namespace/name``, or None if it does not exist."""
        try:
            response: Any = self._core.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=self.settings.request_timeout_s
            )
            return _json(response.data)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise Unavailable(f"GET pod {namespace}/{name} failed: {_describe(exc)}") from None
        except (HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"GET pod {namespace}/{name} failed: {_describe(exc)}") from None

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]


def _json(data: bytes) -> dict[str, Any]:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
