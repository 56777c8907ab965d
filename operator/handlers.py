"""The kopf handlers: small and typed; the work is in `reconciling.py`.

Handlers are registered into an explicit registry (not kopf's global one), so a test can run a
fresh operator against its own Kubernetes emulator, and `running.py` another for production.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from streamscale.operator import constants, metrics
from streamscale.operator.reconciling import Poller, Runtime
from streamscale.operator.specs import SpecError, parse

logger = logging.getLogger(__name__)

Login = Callable[..., Awaitable[kopf.ConnectionInfo | None] | kopf.ConnectionInfo | None]
RESOURCE = (constants.GROUP, constants.VERSION, constants.PLURAL)
MAX_FIRST_DELAY = 10.0
STOP_CHECK_SECONDS = 0.5
STOP_GRACE_SECONDS = 2 * STOP_CHECK_SECONDS
"""How long a stopping daemon has before kopf cancels it: enough to notice `stopped` between
polls. Short, because kopf also holds a deleted StreamConsumer's finalizer for that long."""


async def pause(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Sleep `seconds`, or less once the daemon is asked to stop.

    Not `await stopped.wait(seconds)`: kopf 1.45 runs that in a task of its own whose timeout
    ends as a TimeoutError result, and a daemon (re)started while the operator shuts down leaves
    that task behind for kopf's final re-raise of failed tasks to report.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stopped and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110 (see above)
        await asyncio.sleep(min(left, STOP_CHECK_SECONDS))


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the kubeconfig (kopf's own minimal logins)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, *, login: Login = default_login
) -> None:
    """Register every handler of the operator into `registry`, sharing `runtime`."""
    # Two operators in one namespace (two chart releases) split the StreamConsumers by label;
    # kopf then neither handles nor annotates the other's objects.
    mine = runtime.settings.operator_label
    labels = {constants.OPERATOR_LABEL: mine} if mine else None

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=constants.GROUP
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=constants.GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = constants.FINALIZER
        # Cleanup is the owner references' job: no deletion handler, so no finalizer to block
        # a namespace deletion while the operator is down.
        settings.execution.max_workers = 4
        settings.scanning.disabled = not runtime.settings.scanning

    @kopf.on.login(registry=registry)
    async def authenticate(**kwargs: Any) -> kopf.ConnectionInfo | None:
        result = login(**kwargs)
        info = await result if isinstance(result, Awaitable) else result
        if info is None:
            raise kopf.LoginError("no Kubernetes credentials: no service account, no kubeconfig")
        await runtime.login(info)
        await runtime.check_peering()
        return info

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await runtime.close()

    @kopf.on.create(*RESOURCE, registry=registry, labels=labels)
    @kopf.on.resume(*RESOURCE, registry=registry, labels=labels)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry, labels=labels)
    async def reconcile(
        name: str, namespace: str | None, spec: kopf.Spec, body: kopf.Body, reason: str, **_: Any
    ) -> None:
        """Create the consumer Deployment, or propagate spec changes to it."""
        if runtime.closed:  # a late event while the operator shuts down: the next run handles it
            return
        created = str(body.get("metadata", {}).get("creationTimestamp") or "")
        try:
            parsed = parse(namespace or "", name, spec, creation_timestamp=created)
            await runtime.check_model(parsed, fresh=True)
            deployment = await runtime.ensure_deployment(parsed, body)
        except SpecError as exc:
            kopf.warn(body, reason=exc.reason, message=str(exc))
            raise kopf.PermanentError(str(exc)) from exc
        if deployment is not None and reason == "update":
            kopf.info(body, reason="Updated", message=f"Deployment {name} follows the new spec")

    # cancellation_backoff: at shutdown, give the daemon time to notice `stopped` (it checks
    # every STOP_CHECK_SECONDS, or when its poll ends) before kopf cancels it, which kopf would
    # log as a warning per StreamConsumer on every normal stop.
    @kopf.daemon(
        *RESOURCE,
        registry=registry,
        labels=labels,
        cancellation_backoff=STOP_GRACE_SECONDS,
        cancellation_timeout=10.0,
        backoff=5.0,
    )
    async def poll(
        name: str,
        namespace: str | None,
        body: kopf.Body,
        spec: kopf.Spec,
        status: kopf.Status,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        """Poll Redis every `spec.scaling.pollSeconds`; scale, dead-letter, trim, report.

        A daemon rather than a kopf timer: the interval is per StreamConsumer and may change
        with its spec, and `body` here is a live view of the latest version of the object.
        """
        poller = Poller(runtime, namespace or "", name, status)
        # Spread the first polls of many StreamConsumers (an operator restart starts them all at
        # once) over one poll interval, so they do not hit Redis and the API server together.
        first = float(
            (spec.get("scaling") or {}).get("pollSeconds") or constants.DEFAULT_POLL_SECONDS
        )
        await pause(stopped, random.uniform(0, min(first, MAX_FIRST_DELAY)))
        try:
            while not stopped and not runtime.closed:
                result = await poller.tick(body)
                await pause(stopped, result.delay)
        finally:
            metrics.forget(namespace or "", name)
            if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.OPERATOR_EXITING:
                runtime.exiting = True
