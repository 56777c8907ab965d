"""`streamscale operate`: the Kubernetes operator (kopf), for StreamConsumer resources."""

from __future__ import annotations

import importlib
import logging

import click
from pydantic import ValidationError

from streamscale.cli.commands.shared import settings_error
from streamscale.core.errors import ConfigError


@click.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch every namespace.")
def operate(namespaces: tuple[str, ...], all_namespaces: bool) -> None:
    """Run the Kubernetes operator (kopf) for StreamConsumer resources."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("name the scope: --namespace NS (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    # Imported here, not at the top: `--help` lists this module, and kopf is slow to import.
    running = importlib.import_module("streamscale.operator.running")
    check_kubernetes_login()
    try:
        running.run(list(namespaces), all_namespaces)
    except ValidationError as exc:
        raise ConfigError(settings_error(exc, "operator settings")) from None


def check_kubernetes_login() -> None:
    """Find the operator's Kubernetes credentials now, as kopf would, or stop with what to do.

    Without any, kopf keeps retrying its login in the background and the operator waits
    forever with nothing but a log line.
    """
    import kopf  # noqa: PLC0415 - see `operate`

    handlers = importlib.import_module("streamscale.operator.handlers")
    try:
        found = handlers.default_login(settings=kopf.OperatorSettings(), logger=logging.getLogger())
    except Exception as exc:
        raise ConfigError(
            f"cannot read the Kubernetes credentials: {type(exc).__name__}: {exc}. Fix the"
            " kubeconfig that KUBECONFIG (or ~/.kube/config) names, or run inside the cluster"
        ) from None
    if found is None:
        raise ConfigError(
            "no Kubernetes credentials: neither an in-cluster service account nor a kubeconfig"
            " (KUBECONFIG, ~/.kube/config) was found. Run it inside the cluster, or point"
            " KUBECONFIG at a kubeconfig for the cluster to operate"
        )
