"""workflow: a DAG of jobs. Applying only records it for now; running it belongs to the workflow runner."""
from __future__ import annotations

from reconciler.providers.recorded import RecordedProvider


class WorkflowProvider(RecordedProvider):
    type = "workflow"
    applied_message = "recorded; runs come with the workflow runner"
    deleted_message = "removed; no further runs"
