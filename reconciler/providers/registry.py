"""Which provider handles which resource type."""
from __future__ import annotations

from reconciler.providers.base import Provider
from reconciler.providers.bundle import BundleProvider
from reconciler.providers.dataproduct import DataProductProvider
from reconciler.providers.depot import DepotProvider
from reconciler.providers.operator import OperatorProvider
from reconciler.providers.policy import PolicyProvider
from reconciler.providers.secret import SecretProvider
from reconciler.providers.service import ServiceProvider
from reconciler.providers.stack import StackProvider
from reconciler.providers.workflow import WorkflowProvider
from reconciler.providers.workspace import WorkspaceProvider

PROVIDERS: dict[str, Provider] = {
    p.type: p
    for p in (
        WorkspaceProvider(), DepotProvider(), SecretProvider(), PolicyProvider(), StackProvider(),
        OperatorProvider(), WorkflowProvider(), ServiceProvider(), BundleProvider(), DataProductProvider(),
    )
}


def get_provider(type_: str) -> Provider:
    try:
        return PROVIDERS[type_]
    except KeyError:
        raise KeyError(f"no provider for resource type {type_!r}") from None
