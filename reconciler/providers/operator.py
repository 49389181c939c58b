"""operator: an adapter to an external engine over HTTP; the workflow runner reads its applied spec."""
from __future__ import annotations

from reconciler.providers.recorded import RecordedProvider


class OperatorProvider(RecordedProvider):
    type = "operator"
    applied_message = "recorded; workflows may now run jobs through it"
    deleted_message = "removed; workflows can no longer use it"
