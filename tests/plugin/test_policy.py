"""Policy decisions: namespaces, management kinds, allowed kinds, runtime-handled CDI."""

from __future__ import annotations

import pytest

from nri_plugin.policy import Policy, PolicyError, check, env_counts, runtime_handled
from nri_plugin.requests import Request, Source

ANN = Source("annotation", "nvidia.cdi.k8s.io/pod", "pod")
CDI = Source("annotation", "cdi.k8s.io/x", "container")
ENV = Source("env", "NVIDIA_VISIBLE_DEVICES")


def test_defaults_allow_ordinary_devices_everywhere() -> None:
    check(Policy(), "anything", [Request("nvidia.com/gpu=0", ANN), Request("x.com/y=z", ENV)])


def test_annotation_namespaces_restrict_annotations_but_not_env() -> None:
    policy = Policy(annotation_namespaces=frozenset({"gpu", "ml"}))
    check(policy, "gpu", [Request("nvidia.com/gpu=0", ANN)])
    check(policy, "web", [Request("nvidia.com/gpu=0", ENV)])
    with pytest.raises(PolicyError) as caught:
        check(policy, "web", [Request("nvidia.com/gpu=0", ANN)])
    assert str(caught.value) == (
        'pod annotation "nvidia.cdi.k8s.io/pod" requests "nvidia.com/gpu=0", but namespace '
        '"web" may not request devices by annotation (allowed: "gpu", "ml")'
    )


def test_management_devices_only_for_allowed_namespaces_from_any_source() -> None:
    policy = Policy(management_namespaces=frozenset({"gpu-operator"}))
    request = Request("management.nvidia.com/gpu=all", ANN)
    check(policy, "gpu-operator", [request])
    for source in (ANN, ENV):
        with pytest.raises(PolicyError, match='a management device, but namespace "default"'):
            check(policy, "default", [Request("management.nvidia.com/gpu=all", source)])
    with pytest.raises(PolicyError, match=r"\(allowed: none\)"):
        check(Policy(), "kube-system", [request])


def test_allowed_kinds() -> None:
    policy = Policy(allowed_kinds=frozenset({"nvidia.com/gpu"}))
    check(policy, "ns", [Request("nvidia.com/gpu=0", ANN)])
    with pytest.raises(PolicyError) as caught:
        check(policy, "ns", [Request("nvidia.com/gpu=0", ANN), Request("vendor.io/fpga=1", ENV)])
    assert str(caught.value) == (
        'env NVIDIA_VISIBLE_DEVICES requests "vendor.io/fpga=1", but kind "vendor.io/fpga" '
        'may not be requested (allowed kinds: "nvidia.com/gpu")'
    )


def test_env_for_unprivileged_containers() -> None:
    assert env_counts(Policy(), privileged=False)
    assert not env_counts(Policy(env_unprivileged=False), privileged=False)
    assert env_counts(Policy(env_unprivileged=False), privileged=True)


def test_runtime_handled_cdi_annotations() -> None:
    requests = [Request("nvidia.com/gpu=0", CDI), Request("nvidia.com/gpu=1", ANN)]
    assert runtime_handled(Policy(runtime_cdi="inject"), requests, {"nvidia.com/gpu=0"}) == set()
    assert runtime_handled(Policy(runtime_cdi="skip"), requests) == {"nvidia.com/gpu=0"}
    auto = Policy(runtime_cdi="auto")
    assert runtime_handled(auto, requests) == set()
    assert runtime_handled(auto, requests, {"nvidia.com/gpu=0"}) == {"nvidia.com/gpu=0"}
    # only cdi.k8s.io requests are ever left to the runtime
    assert runtime_handled(auto, requests, {"nvidia.com/gpu=1"}) == set()
