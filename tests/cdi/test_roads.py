"""The fast YAML road (events straight to the model) against the general road (events ->
dicts -> model), which defines the semantics: the fast road either builds an equal Spec or
steps aside (`Unusual`); it never accepts what the general road rejects."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdi import codec
from cdi.errors import SpecError
from cdi.schema import (
    DEVICE_FIELDS,
    EDITS_FIELDS,
    HOOK_FIELDS,
    MOUNT_FIELDS,
    NODE_FIELDS,
    RDT_FIELDS,
    SPEC_FIELDS,
    spec_from_data,
)
from cdi.spec import Spec
from cdi.yamlfast import TABLES, Unusual, parse_spec_fast
from tests.cdi.test_roundtrip import specs


def general(text: str) -> Spec | None:
    try:
        return spec_from_data(codec.decode(text, "x.yaml"), "x.yaml")
    except SpecError:
        return None
    except Exception as error:  # any other exception is a bug
        raise AssertionError(f"general road crashed on {text!r}") from error


def check_roads(text: str) -> None:
    expected = general(text)
    try:
        fast = parse_spec_fast(text)
    except Unusual:
        return
    assert expected is not None, f"fast road accepted what the general road rejects: {text!r}"
    assert fast == expected


def test_tables_agree() -> None:
    pairs = {
        "node": NODE_FIELDS,
        "mount": MOUNT_FIELDS,
        "hook": HOOK_FIELDS,
        "rdt": RDT_FIELDS,
        "edits": EDITS_FIELDS,
        "device": DEVICE_FIELDS,
        "spec": SPEC_FIELDS,
    }
    for name, fast_table in TABLES.items():
        schema_table = pairs[name]
        for key, (attr, _) in fast_table.items():
            assert schema_table[key][0] == attr, (name, key)
    # the fast road skips only the boolean fields (they step aside to the general road)
    assert set(RDT_FIELDS) - set(TABLES["rdt"]) == {"enableCMT", "enableMBM"}
    for name, schema_table in pairs.items():
        if name != "rdt":
            assert set(schema_table) == set(TABLES[name]), name


@settings(max_examples=200, deadline=None)
@given(specs)
def test_dumped_specs_take_the_fast_road(spec: Spec) -> None:
    text = codec.dump_spec(spec)
    check_roads(text)
    rdt = [e.intel_rdt for e in [spec.container_edits] + [d.container_edits for d in spec.devices]]
    if all(r is None or (r.enable_cmt is None and r.enable_mbm is None) for r in rdt):
        assert parse_spec_fast(text) == spec


# Raw YAML tokens, most of them troublemakers in some position.
SCALARS = [
    "x",
    '"x"',
    "'x y'",
    "/dev/x",
    "0",
    '"0"',
    "195",
    "0666",
    "08",
    "-1",
    "+5",
    "4294967296",
    "9223372036854775808",
    "on",
    "y",
    "~",
    "null",
    "",
    "1.5",
    "0x1F",
    "0o17",
    "1_000",
    "0:1",
    "2001-01-01",
    "!!int 3",
    "!!str 5",
    "!!bool yes",
    "! z",
    "&a v",
    "*a",
    ".inf",
    "A=1",
    "createContainer",
    "c",
    "rwm",
    '"\\u00e9"',
]


def key_strategy(table: dict[str, object]) -> st.SearchStrategy[str]:
    keys = list(table)
    return st.one_of(
        st.sampled_from(keys),
        st.sampled_from(keys).map(str.upper),
        st.sampled_from(keys).map(lambda key: f'"{key}"'),
        st.sampled_from(keys).map(lambda key: f"!!str {key}"),
        st.sampled_from(["unknown", "on", "0", "<<", "? [a]"]),
    )


scalar = st.sampled_from(SCALARS)


def flow_list(item: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(item, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")


def flow_map(table: dict[str, object], value: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(key_strategy(table), value).map(lambda kv: f"{kv[0]}: {kv[1]}")
    return st.lists(pair, max_size=6).map(lambda pairs: "{" + ", ".join(pairs) + "}")


value = st.one_of(scalar, flow_list(scalar))
node = flow_map(NODE_FIELDS, value)
hook = flow_map(HOOK_FIELDS, value)
mount = flow_map(MOUNT_FIELDS, value)
rdt = flow_map(RDT_FIELDS, value)
edits_value = st.one_of(value, flow_list(node), flow_list(hook), flow_list(mount), rdt)
edits = flow_map(EDITS_FIELDS, edits_value)
device = flow_map(DEVICE_FIELDS, st.one_of(scalar, edits, flow_map({"a": 1}, scalar)))
spec_text = flow_map(
    SPEC_FIELDS, st.one_of(scalar, flow_list(device), edits, flow_map({"a": 1}, scalar))
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_text, st.sampled_from(["", "---\n", "--- &top\n"]), st.sampled_from(["", "\n---\n"]))
def test_perturbed_documents(text: str, head: str, tail: str) -> None:
    check_roads(head + text + tail)


def test_examples_that_step_aside() -> None:
    for text in [
        "cdiVersion: 0.3.0\nkind: a.com/bb\ndevices: []\n",  # plain 0.3.0 is a string: fast
        "cdiVersion: ~\n",
        "CDIVersion: x\n",
        "cdiVersion: x\ncdiVersion: y\n",
        "a: &x b\nc: *x\n",
        "cdiVersion: x\n---\nkind: y\n",
    ]:
        check_roads(text)
