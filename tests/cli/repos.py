"""Small artefact repositories the CLI tests build on."""

WORKSPACE = """
version: v1
type: workspace
name: payments
description: Card payments
"""

DEPOT = """
version: v1
type: depot
name: raw
description: Raw card transactions
owner: team-payments
depot:
  kind: file
  path: data/tx
  format: csv
"""

CSV = "id,amount,currency\n1,10.5,USD\n2,-1,EUR\n3,7,USD\n"

WORKFLOW = """
version: v1
type: workflow
name: daily
workspace: payments
workflow:
  dag:
    - name: clean
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw/transactions"}]
        steps:
          - {name: valid, sql: "SELECT * FROM raw WHERE amount > 0"}
        outputs: [{from: valid, dataset: "lake://payments/valid", mode: overwrite}]
    - name: checks
      stack: quality
      depends_on: [clean]
      spec:
        dataset: "lake://payments/valid"
        checks:
          - row_count: {min: 1}
"""

SECRET = """
version: v1
type: secret
name: api-token
workspace: payments
secret:
  from: {env: RECONCILER_TEST_TOKEN}
"""

POLICY = """
version: v1
type: policy
name: mask-cards
policy:
  subjects: {groups: ["*"]}
  datasets: ["lake://payments/*"]
  mask:
    - {columns: [card_number], with: last4}
"""


def basic(**extra):
    files = {
        "workspace.yaml": WORKSPACE,
        "depots/raw.yaml": DEPOT,
        "data/tx/transactions.csv": CSV,
        "workflows/daily.yaml": WORKFLOW,
        "policies/mask.yaml": POLICY,
    }
    files.update(extra)
    return files


def depots(n: int, prefix: str = "extra") -> dict:
    """n independent file depots over the same folder."""
    return {f"depots/{prefix}-{i}.yaml": DEPOT.replace("name: raw", f"name: {prefix}-{i}") for i in range(n)}
