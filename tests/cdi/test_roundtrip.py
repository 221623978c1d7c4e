"""Property: any Spec dumped as YAML or JSON loads back equal (and PyYAML agrees)."""

from __future__ import annotations

import json

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cdi import codec, dump
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
# Strings that YAML 1.1 readers love to mistype.
tricky = st.sampled_from(
    [
        "0",
        "on",
        "Off",
        "y",
        "N",
        "~",
        "null",
        "0.5",
        "1e5",
        "0o17",
        "0x1F",
        "0:1",
        "2001-12-14",
        ".inf",
        "-",
        "- a",
        "a: b",
        "#c",
        "!x",
        "&a",
        "*a",
        "|",
        ">",
        "'",
        '"',
        "@",
        "%",
        "`",
        "",
        " lead",
        "trail ",
        "x:",
        "=",
        "<<",
        "\u0085",
        "\u2028",
        "\x7f",
        "\t",
        "é",
        "😀",
    ]
)
string = st.one_of(text, tricky)
strings = st.lists(string, max_size=3)
int64 = st.integers(-(1 << 63), (1 << 63) - 1)
uint32 = st.integers(0, (1 << 32) - 1)


def optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), strategy)


nodes = st.builds(
    DeviceNode,
    string,
    optional(string),
    optional(string),
    optional(int64),
    optional(int64),
    optional(uint32),
    optional(string),
    optional(uint32),
    optional(uint32),
)
hooks = st.builds(Hook, string, string, strings, strings, optional(int64))
mounts = st.builds(Mount, string, string, strings, optional(string))
rdt = st.builds(
    IntelRdt,
    optional(string),
    optional(string),
    optional(string),
    optional(st.booleans()),
    optional(st.booleans()),
)
edits = st.builds(
    ContainerEdits,
    strings,
    st.lists(nodes, max_size=2),
    st.lists(hooks, max_size=2),
    st.lists(mounts, max_size=2),
    optional(rdt),
    st.lists(uint32, max_size=2),
)
annotations = st.dictionaries(string, string, max_size=2)
devices = st.builds(Device, string, edits, annotations=annotations)
specs = st.builds(
    Spec, string, string, st.lists(devices, max_size=3), edits, annotations=annotations
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_yaml_round_trip(spec: Spec) -> None:
    text = dump.dump_spec(spec, "yaml")
    assert codec.decode_spec(text, "x.yaml") == spec
    # an independent YAML 1.1 reader sees the same data
    assert yaml.load(text, Loader=yaml.CSafeLoader) == dump.to_data(spec)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_json_round_trip(spec: Spec) -> None:
    text = dump.dump_spec(spec, "json")
    assert codec.decode_spec(text, "x.json") == spec
    assert json.loads(text) == dump.to_data(spec)
