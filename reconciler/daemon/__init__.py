"""The GitOps daemon: its configuration (config.py), webhook checks (webhook.py), and, wired by the
daemon itself, the poll/reconcile loop, the status branch writer and the HTTP API (SPEC.md section 4)."""
