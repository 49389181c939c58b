"""Data products as consumers see them: SLO evaluation and health (slo.py), service probes
(probe.py), the product view shared by the CLI and the API (view.py), ODCS/ODPS export (export.py)."""
