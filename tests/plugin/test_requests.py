"""Requests: annotations and env -> ordered, de-duplicated qualified names with sources."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_plugin.requests import (
    Request,
    RequestError,
    Source,
    container_requests,
    effective_key,
    env_requests,
    env_value,
)


def names(requests: tuple[Request, ...] | list[Request]) -> list[str]:
    return [r.name for r in requests]


def test_container_without_any_request_asks_for_nothing() -> None:
    got = container_requests("c0", {"io.kubernetes.cri.container-type": "container"}, {}, ["A=1"])
    assert got == ()


def test_cdi_annotations_are_read_in_sorted_key_order_and_keep_value_order() -> None:
    annotations = {
        "cdi.k8s.io/zz": "nvidia.com/gpu=3,nvidia.com/gpu=1",
        "cdi.k8s.io/aa": "nvidia.com/gpu=2",
        "other.io/x": "nvidia.com/gpu=9",
    }
    got = container_requests("c0", annotations, {})
    assert names(got) == ["nvidia.com/gpu=2", "nvidia.com/gpu=3", "nvidia.com/gpu=1"]
    assert got[0].source == Source("annotation", "cdi.k8s.io/aa", "container")
    assert got[0].source.is_cdi_annotation


def test_cdi_annotation_on_the_pod_is_not_a_container_request() -> None:
    assert container_requests("c0", {}, {"cdi.k8s.io/x": "nvidia.com/gpu=0"}) == ()


@pytest.mark.parametrize(
    ("keys", "winner"),
    [
        (["container.c0", "pod", ""], "container.c0"),
        (["container.other", "pod", ""], "pod"),
        (["container.other", ""], ""),
    ],
)
def test_nri_convention_container_key_then_pod_then_bare(keys: list[str], winner: str) -> None:
    pod = {}
    for i, suffix in enumerate(keys):
        key = "cdi-devices.nri.io" + (f"/{suffix}" if suffix else "")
        pod[key] = f"- vendor.com/dev=d{i}"
    expected_key = "cdi-devices.nri.io" + (f"/{winner}" if winner else "")
    assert effective_key(pod, "cdi-devices.nri.io", "c0") == expected_key
    (got,) = container_requests("c0", {}, pod)
    assert got.source == Source("annotation", expected_key, "pod")
    assert got.name == pod[expected_key][2:]


def test_nri_convention_value_is_a_yaml_list() -> None:
    pod = {"cdi-devices.nri.io/pod": "- nvidia.com/gpu=0\n- 'nvidia.com/gpu=1'\n"}
    assert names(container_requests("c", {}, pod)) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    flow = {"cdi-devices.nri.io": "[nvidia.com/gpu=0, nvidia.com/gpu=1]"}
    assert names(container_requests("c", {}, flow)) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert container_requests("c", {}, {"cdi-devices.nri.io": ""}) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nvidia.com/gpu=0", "expected a YAML list of CDI device names, got a str"),
        ("- [a, b]", "found the item ['a', 'b']"),
        ("- 3", "found the item 3"),
        ("- a: [", "not valid YAML"),
        ("- gpu0", 'unqualified device "gpu0"'),
    ],
)
def test_nri_convention_bad_values_name_the_key(value: str, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        container_requests("c0", {}, {"cdi-devices.nri.io/container.c0": value})
    text = str(caught.value)
    assert 'pod annotation "cdi-devices.nri.io/container.c0"' in text
    assert message in text


def test_nvidia_convention_is_comma_separated_with_the_same_lookup() -> None:
    pod = {
        "nvidia.cdi.k8s.io/container.c1": "nvidia.com/gpu=1",
        "nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=0,nvidia.com/gpu=GPU-abc",
    }
    assert names(container_requests("c1", {}, pod)) == ["nvidia.com/gpu=1"]
    got = container_requests("c2", {}, pod)
    assert names(got) == ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-abc"]
    assert str(got[0].source) == 'pod annotation "nvidia.cdi.k8s.io/pod"'


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("nvidia.com/gpu=0, nvidia.com/gpu=1", " nvidia.com/gpu=1"),
        ("nvidia.com/gpu=0,,nvidia.com/gpu=1", ""),
        ("nvidia.com/gpu=0,", ""),
        ("gpu=0", "gpu=0"),
        ("nvidia.com/gpu=bad!name", "nvidia.com/gpu=bad!name"),
    ],
)
def test_comma_lists_are_strict_like_the_reference(value: str, bad: str) -> None:
    with pytest.raises(RequestError) as caught:
        container_requests("c0", {"cdi.k8s.io/req": value}, {})
    text = str(caught.value)
    assert text.startswith('container annotation "cdi.k8s.io/req": ')
    assert f'device "{bad}"' in text


def test_sources_merge_in_precedence_order_and_duplicates_collapse() -> None:
    ctr = {"cdi.k8s.io/a": "nvidia.com/gpu=1,nvidia.com/gpu=1"}
    pod = {
        "cdi-devices.nri.io/pod": "- nvidia.com/gpu=0\n- nvidia.com/gpu=1",
        "nvidia.cdi.k8s.io": "nvidia.com/gpu=2,nvidia.com/gpu=0",
    }
    got = container_requests("c0", ctr, pod, ["NVIDIA_VISIBLE_DEVICES=3"])
    assert names(got) == ["nvidia.com/gpu=1", "nvidia.com/gpu=0", "nvidia.com/gpu=2"]
    assert [r.source.key for r in got] == [
        "cdi.k8s.io/a",
        "cdi-devices.nri.io/pod",
        "nvidia.cdi.k8s.io",
    ]


def test_env_counts_only_without_annotation_requests() -> None:
    env = ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"]
    got = container_requests("c0", {}, {}, env)
    assert names(got) == ["nvidia.com/gpu=all"]
    assert got[0].source == Source("env", "NVIDIA_VISIBLE_DEVICES")
    assert str(got[0].source) == "env NVIDIA_VISIBLE_DEVICES"
    assert names(container_requests("c0", {"cdi.k8s.io/x": "ab.com/cd=e"}, {}, env)) == [
        "ab.com/cd=e"
    ]
    assert container_requests("c0", {}, {}, env, use_env=False) == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", ["all"]),
        ("0,all,1", ["all"]),
        ("0,1", ["0", "1"]),
        (" 2 , 1:0 ,2", ["2", "1:0"]),
        ("GPU-8a1b2c3d-0000-1111-2222-333344445555", ["GPU-8a1b2c3d-0000-1111-2222-333344445555"]),
        ("MIG-0b1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff", ["MIG-0b1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff"]),
        ("none", []),
        ("void", []),
        ("", []),
        ("0,void", []),
    ],
)
def test_visible_devices_values(value: str, expected: list[str]) -> None:
    got = container_requests("c0", {}, {}, [f"NVIDIA_VISIBLE_DEVICES={value}"])
    assert names(got) == [f"nvidia.com/gpu={e}" for e in expected]


def test_visible_devices_kind_is_configurable_and_qualified_names_pass_through() -> None:
    assert names(env_requests("0,other.com/xy=z", "example.com/gpu")) == [
        "example.com/gpu=0",
        "other.com/xy=z",
    ]


def test_visible_devices_bad_id_names_the_env_var() -> None:
    with pytest.raises(RequestError) as caught:
        container_requests("c0", {}, {}, ["NVIDIA_VISIBLE_DEVICES=0,gpu#1"])
    assert str(caught.value).startswith(
        'env NVIDIA_VISIBLE_DEVICES: invalid device "nvidia.com/gpu=gpu#1": invalid device name'
    )


def test_env_value_takes_the_first_definition() -> None:
    env = ["NVIDIA_VISIBLE_DEVICES_X=1", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=1"]
    assert env_value(env) == "0"
    assert env_value(["A=1"]) is None
    assert env_value([]) is None
    assert env_value(["NVIDIA_VISIBLE_DEVICES="]) == ""
    assert env_value(["A=1", "NVIDIA_VISIBLE_DEVICES=all"]) == "all"


@given(st.lists(st.text(st.sampled_from("AN=\0_,1"), max_size=30), max_size=8))
def test_env_value_is_the_first_entry_with_the_prefix(env: list[str]) -> None:
    # entries with NUL in them (never valid in an environment) must not fake an entry
    env = [e.replace("A", "NVIDIA_VISIBLE_DEVICES") for e in env]
    first = next((e for e in env if e.startswith("NVIDIA_VISIBLE_DEVICES=")), None)
    assert env_value(env) == (None if first is None else first.partition("=")[2])


@pytest.mark.parametrize(
    ("container_annotations", "pod_annotations", "env"),
    [
        ({"cdi.k8s.io/x": "vendor.com/dev=0"}, {}, []),
        ({}, {"cdi-devices.nri.io": "- vendor.com/dev=0"}, []),
        ({}, {"cdi-devices.noderesource.dev/pod": "- vendor.com/dev=0"}, []),
        ({}, {"nvidia.cdi.k8s.io/container.c": "vendor.com/dev=0"}, []),
        ({}, {"nvidia.cdi.k8s.io": "vendor.com/dev=0"}, []),
        ({}, {}, ["NVIDIA_VISIBLE_DEVICES=0"]),
    ],
)
def test_every_request_carries_a_marker(
    container_annotations: dict[str, str], pod_annotations: dict[str, str], env: list[str]
) -> None:
    # the stub answers requests without any marker unseen: each source must have one
    from nri_plugin.protocol import api
    from nri_plugin.requests import MARKERS

    assert container_requests("c", container_annotations, pod_annotations, env)
    req = api.CreateContainerRequest(
        pod=api.PodSandbox(annotations=pod_annotations),
        container=api.Container(name="c", annotations=container_annotations, env=env),
    )
    assert any(marker in req.SerializeToString() for marker in MARKERS)


def test_device_injector_new_domain_comes_first_within_each_scope() -> None:
    pod = {
        "cdi-devices.nri.io/container.c0": "- nvidia.com/gpu=0",
        "cdi-devices.noderesource.dev/pod": "- nvidia.com/gpu=1",
        "cdi-devices.noderesource.dev/container.c0": "- nvidia.com/gpu=2",
    }
    (got,) = container_requests("c0", {}, pod)
    assert got.source.key == "cdi-devices.noderesource.dev/container.c0"
    del pod["cdi-devices.noderesource.dev/container.c0"]
    (got,) = container_requests("c0", {}, pod)
    assert got.source.key == "cdi-devices.nri.io/container.c0"  # container scope beats pod


_GPU = st.sampled_from(["nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=all", "ab.io/cd=e"])


@given(
    cdi=st.lists(_GPU, min_size=1, max_size=4),
    nri=st.lists(_GPU, max_size=4),
    nvidia=st.lists(_GPU, max_size=4),
)
def test_merged_requests_keep_first_occurrence_order_without_duplicates(
    cdi: list[str], nri: list[str], nvidia: list[str]
) -> None:
    pod = {}
    if nri:
        pod["cdi-devices.nri.io/pod"] = "\n".join(f"- {n}" for n in nri)
    if nvidia:
        pod["nvidia.cdi.k8s.io"] = ",".join(nvidia)
    got = container_requests(
        "c", {"cdi.k8s.io/x": ",".join(cdi)}, pod, ["NVIDIA_VISIBLE_DEVICES=1"]
    )
    assert names(got) == list(dict.fromkeys(cdi + nri + nvidia))
    first_source = {}
    for source, items in (
        ("cdi.k8s.io/x", cdi),
        ("cdi-devices.nri.io/pod", nri),
        ("nvidia.cdi.k8s.io", nvidia),
    ):
        for item in items:
            first_source.setdefault(item, source)
    assert {r.name: r.source.key for r in got} == first_source
