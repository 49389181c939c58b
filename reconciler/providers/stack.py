"""stack: a job runtime defined in YAML; the workflow runner reads its applied spec."""
from __future__ import annotations

from reconciler.providers.recorded import RecordedProvider


class StackProvider(RecordedProvider):
    type = "stack"
    applied_message = "recorded; workflows may now run jobs on it"
    deleted_message = "removed; workflows can no longer use it"
