"""Policies decided, pure: who may read what, with which masks and filters, and the access diff of a change."""
import re

import pytest

from reconciler.core.access import (AccessChange, DatasetInfo, PolicySet, Subject, access_diff, glob_match,
                                    subjects_for_diff)
from reconciler.core.policy_checks import DatasetUniverse, check_policies, filter_problem
from reconciler.core.resource import Resource

ORDERS = "lake://shop/orders"
COLUMNS = {"id": [], "email": ["pii"], "card_number": ["pii", "pci"], "region": []}
ANA = Subject("ana", frozenset({"analysts"}))
EVE = Subject("eve")
OWEN = Subject("owen", frozenset({"team-shop"}))
ROOT = Subject("root", frozenset({"platform"}), admin=True)


def policy(name, *, users=(), groups=(), datasets=(ORDERS,), access=None, mask=(), filter=None):
    section = {"subjects": {"users": list(users), "groups": list(groups)}, "datasets": list(datasets)}
    if access:
        section["access"] = access
    if mask:
        section["mask"] = [dict(m) for m in mask]
    if filter:
        section["filter"] = filter
    return name, {"version": "v1", "type": "policy", "name": name, "policy": section}


def policies(*items) -> PolicySet:
    return PolicySet.from_specs(items)


def decide(ps, subject, dataset=ORDERS, owner="team-shop", columns=COLUMNS):
    return ps.decide(subject, dataset, owner, columns)


# -- glob_match ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, address, hit", [
    ("lake://payments/*", "lake://payments/valid", True),
    ("lake://payments/*", "lake://payments/a/b", False),  # one segment only
    ("lake://payments/*", "lake://paymentsx/valid", False),
    ("depot://raw/**", "depot://raw/a/b/c", True),
    ("depot://raw/**", "depot://raw/x", True),
    ("lake://*/valid", "lake://shop/valid", True),
    ("lake://shop/ord?rs", "lake://shop/orders", True),
    ("lake://shop/orders", "lake://shop/orders", True),
    ("lake://shop/orders", "lake://shop/orders2", False),
    ("lake://shop.x/*", "lake://shopax/t", False),  # regex characters are literal
])
def test_glob_match(pattern, address, hit):
    assert glob_match(pattern, address) is hit


# -- decide --------------------------------------------------------------------------------------
def test_default_is_deny_for_everyone_but_the_owner_team_and_admins():
    ps = policies()
    assert not decide(ps, EVE).allowed
    assert "no policy allows it" in decide(ps, ANA).reason
    assert decide(ps, OWEN).allowed and decide(ps, OWEN).reason == "owner team team-shop"
    assert decide(ps, ROOT).allowed and decide(ps, ROOT).reason == "admin"
    assert not decide(ps, OWEN, owner=None).allowed  # a dataset without an owner has no owner team


def test_allow_grants_the_named_users_and_groups_only():
    ps = policies(policy("read", groups=["analysts"], users=["eve"], access="allow"))
    assert decide(ps, ANA).allowed and decide(ps, EVE).allowed
    assert "allowed by policy read" in decide(ps, ANA).reason
    assert not decide(ps, Subject("mallory", frozenset({"sales"}))).allowed
    assert not decide(ps, ANA, dataset="lake://shop/customers").allowed  # not covered


def test_everyone_star_names_every_subject():
    ps = policies(policy("open", groups=["*"], access="allow"))
    assert decide(ps, EVE).allowed and decide(ps, Subject("x")).allowed


def test_deny_wins_over_allow_over_ownership_and_over_admin():
    ps = policies(policy("read", groups=["*"], access="allow"),
                  policy("no-eve", users=["eve"], access="deny"),
                  policy("no-owners", groups=["team-shop"], access="deny"),
                  policy("no-root", users=["root"], access="deny"))
    assert decide(ps, ANA).allowed
    for subject, name in ((EVE, "no-eve"), (OWEN, "no-owners"), (ROOT, "no-root")):
        g = decide(ps, subject)
        assert not g.allowed and name in g.reason and g.policies == (name,)
        assert g.masks == {} and g.filters == ()


def test_masks_by_column_name_and_by_tag_apply_to_owners_too():
    ps = policies(policy("read", groups=["analysts"], access="allow"),
                  policy("pii", groups=["*"], mask=[{"tags": ["pii"], "with": "hash"}]),
                  policy("region", groups=["analysts"], mask=[{"columns": ["REGION"], "with": "redact"}]))
    assert decide(ps, ANA).masks == {"email": "hash", "card_number": "hash", "region": "redact"}
    owner = decide(ps, OWEN)
    assert owner.allowed and owner.masks == {"email": "hash", "card_number": "hash"}  # the owner is named by "*"
    assert "pii" in owner.policies


def test_the_strongest_mask_wins_whatever_the_policy_order():
    for order in (1, -1):
        items = [policy("a-last4", groups=["*"], mask=[{"columns": ["card_number"], "with": "last4"}]),
                 policy("b-null", groups=["analysts"], mask=[{"tags": ["pci"], "with": "null"}]),
                 policy("c-hash", groups=["*"], mask=[{"tags": ["pii"], "with": "hash"}]),
                 policy("read", groups=["analysts"], access="allow")][::order]
        g = decide(policies(*items), ANA)
        assert g.masks == {"card_number": "null", "email": "hash"}


def test_filters_of_every_applying_policy_are_anded():
    ps = policies(policy("read", groups=["analysts"], access="allow", filter="region = 'EU'"),
                  policy("live", groups=["*"], filter="status <> 'test'"),
                  policy("other", groups=["sales"], filter="region = 'US'"))
    g = decide(ps, ANA)
    assert set(g.filters) == {"region = 'EU'", "status <> 'test'"}
    assert decide(ps, OWEN).filters == ("status <> 'test'",)


# -- access_diff ---------------------------------------------------------------------------------
DS = [DatasetInfo(ORDERS, "team-shop", COLUMNS), DatasetInfo("lake://shop/customers", "team-shop", {"id": []})]


def diff(old, new, subjects=(ANA, EVE, OWEN)):
    return access_diff(old, new, DS, list(subjects))


def test_a_new_allow_is_a_gain_with_what_is_read():
    new = policies(policy("read", groups=["analysts"], access="allow", filter="region = 'EU'",
                          mask=[{"tags": ["pii"], "with": "hash"}]))
    changes = diff(policies(), new)
    assert [(c.subject, c.dataset, c.change) for c in changes] == [("ana", ORDERS, "gain")]
    detail = changes[0].detail
    assert "reads id, region" in detail and "card_number (hash)" in detail and "email (hash)" in detail
    assert "rows where region = 'EU'" in detail and "allowed by policy read" in detail


def test_removing_an_allow_or_adding_a_deny_is_a_loss():
    allow = policy("read", groups=["analysts"], access="allow")
    assert diff(policies(allow), policies()) == [AccessChange("ana", ORDERS, "lose", decide(policies(), ANA).reason)]
    changes = diff(policies(allow), policies(allow, policy("no-owner", groups=["team-shop"], access="deny")))
    assert [(c.subject, c.change) for c in changes] == [("owen", "lose")]
    assert "denied by policy no-owner" in changes[0].detail


def test_mask_added_strengthened_removed():
    read = policy("read", groups=["analysts"], access="allow")
    last4 = policy("m", groups=["*"], mask=[{"columns": ["card_number"], "with": "last4"}])
    null = policy("m", groups=["*"], mask=[{"columns": ["card_number"], "with": "null"}])
    added = diff(policies(read), policies(read, last4))
    assert {(c.subject, c.change) for c in added} == {("ana", "mask+"), ("owen", "mask+")}  # eve reads nothing
    assert "card_number now masked with last4" in added[0].detail
    stronger = diff(policies(read, last4), policies(read, null))
    assert {c.change for c in stronger} == {"mask+"} and "null instead of last4" in stronger[0].detail
    removed = diff(policies(read, null), policies(read))
    assert {c.change for c in removed} == {"mask-"} and "in clear" in removed[0].detail


def test_filter_changed():
    old = policies(policy("read", groups=["analysts"], access="allow", filter="region = 'EU'"))
    new = policies(policy("read", groups=["analysts"], access="allow", filter="region IN ('EU', 'UK')"))
    changes = diff(old, new)
    assert [(c.subject, c.change) for c in changes] == [("ana", "filter")]
    assert changes[0].detail == "rows region = 'EU' -> region IN ('EU', 'UK')"


def test_no_change_no_diff():
    ps = policies(policy("read", groups=["analysts"], access="allow", filter="region = 'EU'"))
    assert diff(ps, ps) == []


def test_subjects_for_diff_users_groups_and_owners():
    ps = policies(policy("read", groups=["analysts", "*"], users=["eve"], access="allow"))
    subjects = subjects_for_diff([ps], {"ana": ["analysts"]}, owners=["team-shop", None])
    assert [s.user for s in subjects] == ["ana", "eve", "group:analysts", "group:team-shop"]
    assert subjects[0].groups == {"analysts"}


# -- validate-time checks (core/policy_checks.py) ------------------------------------------------
def resource(type_, name, spec_section, workspace=None, owner=None):
    spec = {"version": "v1", "type": type_, "name": name, type_: spec_section}
    if owner:
        spec["owner"] = owner
    rid = f"{type_}:{workspace}/{name}" if workspace else f"{type_}:{name}"
    return Resource(rid, type_, name, workspace, spec, f"{name}.yaml", 0, 1)


def universe(*extra):
    res = [resource("depot", "raw", {"kind": "file", "path": "d"}),
           resource("depot", "crm", {"kind": "sqlite", "path": "c.db", "datasets": ["customers"]}), *extra]
    return DatasetUniverse.of(res, ["lake://shop/orders", "lake://shop/daily"])


@pytest.mark.parametrize("pattern, known", [
    ("lake://shop/*", True), ("lake://shop/orders", True), ("lake://*/daily", True), ("lake://**", True),
    ("lake://shop/refunds", False), ("lake://shops/*", False),
    ("depot://raw/anything", True),  # raw lists no datasets: any may exist
    ("depot://raw", False), ("depot://crm/customers", True), ("depot://crm/orders", False),
    ("depot://*/customers", True), ("depot://nope/x", False),
])
def test_patterns_are_known_only_when_the_desired_state_produces_a_match(pattern, known):
    assert universe().matches(pattern) is known


def test_workspaces_with_jobs_that_declare_no_outputs_are_not_judged():
    shell = resource("workflow", "w", {"dag": [{"name": "j", "stack": "shell", "spec": {"command": "x"}}]}, "ops")
    assert not universe().matches("lake://ops/t")
    assert universe(shell).matches("lake://ops/t")


def test_findings_for_unknown_patterns_subjects_bad_filters_and_overlaps():
    u = universe()
    allow = resource("policy", "read", {"subjects": {"groups": ["analysts"], "users": ["bob"]},
                                        "datasets": ["lake://shop/*", "lake://shopp/orders"], "access": "allow",
                                        "filter": "region = 'EU'; DROP TABLE x"})
    deny = resource("policy", "no", {"subjects": {"groups": ["analysts"]}, "datasets": ["lake://shop/orders"],
                                     "access": "deny"})
    found = check_policies([allow, deny], u, {"analysts", "*"})
    by = {(f.policy_id, f.path): f for f in found}
    unknown = by[("policy:read", ("policy", "datasets", 1))]
    assert unknown.severity == "error" and "did you mean 'lake://shop/orders'" in unknown.hint
    assert by[("policy:read", ("policy", "subjects", "users", 0))].message.endswith("unknown user 'bob': the instance "
                                                                                    "config does not know it")
    assert "';'" in by[("policy:read", ("policy", "filter"))].message
    assert len(found) == 3  # a policy in error overlaps nothing: it is left out
    # without known subjects there is no subject check at all
    assert not [f for f in check_policies([allow], u, None) if "subjects" in f.path]
    good = resource("policy", "read", {"subjects": {"groups": ["analysts"]}, "datasets": ["lake://shop/*"],
                                       "access": "allow"})
    other = resource("policy", "no-sales", {"subjects": {"groups": ["sales"]}, "datasets": ["lake://shop/*"],
                                            "access": "deny"})
    [overlap] = check_policies([good, deny, other], u, {"analysts", "sales"})
    assert overlap.policy_id == "policy:no" and overlap.path == ("policy", "access")
    assert overlap.severity == "warning" and overlap.message == (
        "policy 'no' denies group 'analysts' on lake://shop/orders, which policy 'read' allows: deny wins, "
        "so 'read' grants nothing there")


@pytest.mark.parametrize("text", ["region = 'EU'", "amount > 10 AND status IN ('a', 'b')", "(flag)",
                                  "upper(country) = 'DE' OR country IS NULL", "x = 'a;b'"])
def test_good_filters(text):
    assert filter_problem(text) is None


@pytest.mark.parametrize("text, words", [
    ("region = ", "not valid SQL"), ("region = 'EU'; DROP TABLE t", "';'"), ("SELECT 1", "query"),
    ("id IN (SELECT id FROM lake.shop.orders)", "subquery"), ("EXISTS (SELECT 1)", "subquery"),
    ("read_csv('/etc/passwd') IS NOT NULL", "read_csv"), ("query('SELECT 1') IS NULL", "query"),
    ("length(read_text('/etc/passwd')) > 0", "read_text"), ("getenv('HOME') = 'x'", "getenv"),
    ("1 + 2", "not a boolean"), ("ATTACH 'x.db'", "statement"), ("", "empty"),
])
def test_bad_filters(text, words):
    problem = filter_problem(text)
    assert problem and words in problem


PLAIN_FILTERS = ["region = 'EU'", "amount > 10 AND status IN ('a', 'b')", "x IS NOT NULL or y <> -1.5",
                 "tenant_id = 42", "country NOT IN ('DE','FR')", "\"Region Name\" = 'it''s'", "a >= 0 AND b < 1.25"]


@pytest.mark.parametrize("text", PLAIN_FILTERS)
def test_plain_filters_need_no_sql_parser(text):
    from reconciler.core.policy_checks import parsed_filter_problem, plain_filter

    assert plain_filter(text) and parsed_filter_problem(text) is None


def test_a_plain_filter_is_checked_without_importing_sqlglot():
    import subprocess
    import sys

    code = ("import sys; from reconciler.core.policy_checks import filter_problem; "
            "assert filter_problem(\"region = 'EU' AND amount > 10\") is None; "
            "assert 'sqlglot' not in sys.modules, 'imported'; "
            "assert filter_problem('upper(region) = 1') is None and 'sqlglot' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_plain_filter_path_agrees_with_the_sql_parser_for_every_keyword_as_a_column():
    """Every keyword of DuckDB and of sqlglot's DuckDB dialect, as a column name in each plain form: where
    the fast path answers, sqlglot finds nothing wrong either (else _NOT_PLAIN_NAMES needs the word)."""
    import re

    import duckdb
    from sqlglot.dialects.duckdb import DuckDB

    from reconciler.core.policy_checks import parsed_filter_problem, plain_filter

    words = {k.lower() for k in DuckDB.tokenizer_class.KEYWORDS if re.fullmatch(r"[A-Za-z_]\w*", k)}
    words |= {w for w, in duckdb.sql("SELECT keyword_name FROM duckdb_keywords()").fetchall()}
    assert len(words) > 300
    forms = ["{w} = 'x'", "{w} > 1", "{w} IN ('a', 'b')", "{w} IS NULL", "{w} IS NOT NULL", "a = 1 AND {w} = 2",
             "{w} <> -1 OR b = 2", '"{w}" = 1']
    answered = disagree = 0
    for w in sorted(words):
        for form in forms:
            for text in (form.format(w=w), form.format(w=w.upper())):
                if plain_filter(text):
                    answered += 1
                    if parsed_filter_problem(text) is not None:
                        disagree += 1
                        print("fast path says fine, sqlglot does not:", text)
    assert answered > 1000 and disagree == 0


@pytest.mark.parametrize("text", ["upper(country) = 'DE'", "(flag)", "x = 'a\\b'", "a = b",
                                  "region = 'EU'; DROP TABLE t", "select = 1", "x IN (SELECT 1)", "x = 1 AND",
                                  "x BETWEEN 1 AND 2"])
def test_other_filters_go_to_the_sql_parser(text):
    from reconciler.core.policy_checks import plain_filter

    assert not plain_filter(text)


# -- the plan's access diff (engine/access_plan.py): its shortcuts must not change the answer -----------
ADDRESSES = ["lake://shop/orders", "lake://shop/daily", "lake://ops/runs", "lake://public/t",
             "depot://raw/tx", "depot://raw/a/b", "depot://crm/customers", "depot://rawx/tx"]
PATTERNS = ["lake://shop/*", "lake://shop/**", "lake://*/runs", "lake://**", "lake://shop/ord*", "lake://shop/orders",
            "depot://raw/*", "depot://raw/**", "depot://raw*/tx", "depot://*/a/*", "depot://crm/cust?mers", "lake://x/*"]


def test_the_address_index_covers_exactly_what_glob_match_does():
    from reconciler.engine.access_plan import AddressIndex

    ps = PolicySet.from_specs([policy(f"p{i}", groups=["*"], datasets=[pat], access="allow")
                               for i, pat in enumerate(PATTERNS)]
                              + [policy("two", groups=["*"], datasets=["lake://ops/*", "depot://crm/*"], access="allow")])
    got = AddressIndex(ADDRESSES).covering(ps.policies)
    for a in ADDRESSES:
        assert sorted(p.name for p in got.get(a, ())) == sorted(p.name for p in ps.policies if p.covers(a)), a


def test_plan_access_equals_deciding_every_subject_on_every_dataset():
    """Grouping datasets and picking subjects are shortcuts: the result is the brute-force diff."""
    from reconciler.core.plan import CREATE, DELETE, UPDATE, Action, Plan
    from reconciler.core.record import Record
    from reconciler.engine.access_plan import InstanceSubjects, known_datasets, plan_access

    workflow = resource("workflow", "daily", {"dag": [{"name": "j", "stack": "sql", "spec": {"outputs": [
        {"from": "x", "dataset": a} for a in ("lake://shop/orders", "lake://shop/daily", "lake://shop/refunds")]}}]},
        "shop", owner="team-shop")
    depot = resource("depot", "raw", {"kind": "file", "path": "d", "datasets": ["tx", "cards"],
                                      "column_tags": {"cards.number": ["pii"]}}, owner="team-raw")
    old = [policy("read", groups=["analysts"], datasets=["lake://shop/*"], access="allow", filter="region = 'EU'"),
           policy("gone", users=["eve"], datasets=["depot://raw/*"], access="allow"),
           policy("same", groups=["*"], datasets=["lake://shop/daily"], mask=[{"columns": ["x"], "with": "hash"}])]
    new = [policy("read", groups=["analysts", "sales"], datasets=["lake://shop/*", "depot://raw/cards"],
                  access="allow", mask=[{"tags": ["pii"], "with": "last4"}]),
           policy("no-owner", groups=["team-shop"], datasets=["lake://shop/orders"], access="deny"),
           old[2]]
    records = {f"policy:{n}": Record(id=f"policy:{n}", type="policy", name=n, workspace=None, spec=spec, hash=n,
                                     phase="Ready")
               for n, spec in old}
    actions = [Action(id="policy:read", action=UPDATE, type="policy", name="read",
                      resource=resource("policy", "read", new[0][1]["policy"])),
               Action(id="policy:no-owner", action=CREATE, type="policy", name="no-owner",
                      resource=resource("policy", "no-owner", new[1][1]["policy"])),
               Action(id="policy:gone", action=DELETE, type="policy", name="gone")]
    desired = {r.id: r for r in (workflow, depot)}
    instance = InstanceSubjects((("ana", ("analysts",)), ("sam", ("sales", "platform")), ("zed", ())),
                                frozenset({"analysts", "sales", "platform"}), frozenset({"platform"}))
    got = plan_access(Plan(actions=actions), records, desired, None, instance)

    datasets = known_datasets(records, desired, None)
    subjects = [Subject("ana", frozenset({"analysts"})), Subject("sam", frozenset({"sales", "platform"}), admin=True),
                Subject("zed"), Subject("eve"), *(Subject(f"group:{g}", frozenset({g})) for g in
                                                  ("analysts", "sales", "team-raw", "team-shop"))]
    brute = access_diff(policies(*old), policies(*new), datasets, subjects)
    assert len(got) == len(brute) > 8
    uncatalogued = re.compile(r"^reads [^;(]*?(?=; | \()")  # none of these datasets is catalogued
    assert sorted((c["subject"], c["dataset"], c["change"], c["detail"]) for c in got) == sorted(
        (c.subject, c.dataset, c.change, uncatalogued.sub("reads every column (not catalogued yet)", c.detail)
         if c.change == "gain" else c.detail) for c in brute)
    cards = [c["detail"] for c in got if c["dataset"] == "depot://raw/cards" and c["subject"] == "ana"]
    assert cards == ["reads every column (not catalogued yet); masked number (last4) (allowed by policy read)"]
    assert {c["change"] for c in got} == {"gain", "lose", "mask+", "filter"}
    assert plan_access(Plan(actions=[Action(id="depot:raw", action=UPDATE, type="depot", name="raw")]), records,
                       desired, None, instance) == []
