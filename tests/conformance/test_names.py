"""Qualified device names and `cdi.k8s.io/` annotations through the reference library (Go,
0.8.0: parser.ParseQualifiedName, cdi.ParseAnnotations, cdi.UpdateAnnotations) and through
cdi.names: same accept/reject decision and the same parts."""

from __future__ import annotations

import pytest

from cdi.errors import AnnotationError, InvalidNameError
from cdi.names import annotation_key, parse_annotations, parse_qualified_name, update_annotations
from tests.conformance import judge
from tests.conformance.corpus_data import doc_sections, name_deviations

GPU = "nvidia.com/gpu="
NAMES = [
    GPU + "0",
    GPU + "all",
    GPU + "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
    GPU + "0:1",
    "nvidia.com/mig-1g.10gb=0:0",
    "NVIDIA.COM/GPU=0",
    "nvidia_com/gpu=0",
    "ab/cd=e",
    "vendor.example/class.x=dev",
    "v" * 200 + ".example/" + "c" * 200 + "=" + "d" * 200,
    GPU + "a.b_c-d:e",
    GPU + "0=1",
    "",
    "0",
    "all",
    "/dev/nvidia0",
    GPU,
    "nvidia.com/gpu",
    "=0",
    "nvidia.com=0",
    "/nvidia.com/gpu=0",
    GPU + "0 ",
    " " + GPU + "0",
    "nvidia.com/gpu/x=0",
    "nvidia.com//gpu=0",
    "1nvidia.com/gpu=0",
    "nvidia.com/1gpu=0",
    "nvidia.com-/gpu=0",
    "nvidia.com/gpu.=0",
    GPU + "-0",
    GPU + "0-",
    GPU + "_0",
    GPU + "gpü",
    GPU + "0,1",
    "nvidia.com/g=0",
    "n/gpu=0",
    "a/b=c",
]
DEVIATIONS = name_deviations()


@pytest.fixture(scope="module")
def parsed(reference: judge.Reference) -> dict[str, judge.NameResult]:
    return reference.parse_names(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parse_qualified_name(parsed: dict[str, judge.NameResult], name: str) -> None:
    ref = parsed[name]
    try:
        ours = parse_qualified_name(name)
    except InvalidNameError as error:
        ours_outcome, message = "invalid", str(error)
    else:
        ours_outcome, message = "ok", ""
    ref_outcome = "panic" if ref.panic else ("ok" if ref.ok else "invalid")
    deviation = DEVIATIONS.get(name)
    if deviation is not None:
        assert (ref_outcome, ours_outcome) == (deviation.reference, deviation.ours), message
        assert deviation.doc in doc_sections()
        return
    assert ours_outcome == ref_outcome, f"reference: {ref.error}, ours: {message}"
    if ref.ok:
        assert (ours.vendor, ours.cls, ours.name) == (ref.vendor, ref.cls, ref.device)
    else:
        assert name in message or repr(name) in message or not name, message


ANNOTATIONS = [
    {"cdi.k8s.io/gpu": f"{GPU}0,{GPU}1"},
    {"cdi.k8s.io/": GPU + "0"},
    {"cdi.k8s.io/a": GPU + "1", "cdi.k8s.io/b": GPU + "0", "other": "x"},
    {"CDI.k8s.io/x": "not a device", "example.com/y": ""},
    {"cdi.k8s.io/gpu": ""},
    {"cdi.k8s.io/gpu": f"{GPU}0,,{GPU}1"},
    {"cdi.k8s.io/gpu": f"{GPU}0,"},
    {"cdi.k8s.io/gpu": f"{GPU}0, {GPU}1"},
    {"cdi.k8s.io/ok": GPU + "0", "cdi.k8s.io/bad": "0"},
    {"cdi.k8s.io/gpu": f"{GPU}0,{GPU}0"},
    {"cdi.k8s.io/gpu": "nvidia.com/g=0"},
]


@pytest.mark.parametrize(
    "annotations", ANNOTATIONS, ids=lambda a: ";".join(f"{k}={v}" for k, v in a.items())
)
def test_parse_annotations(reference: judge.Reference, annotations: dict[str, str]) -> None:
    ref = reference.parse_annotations(annotations)
    if ref.panic:
        # Documented deviation (same as for names): 0.8.0 panics, we reject.
        assert "one-character vendor or class" in doc_sections()
        with pytest.raises(AnnotationError):
            parse_annotations(annotations)
        return
    try:
        keys, _ = parse_annotations(annotations)
    except AnnotationError as error:
        assert not ref.ok, f"we refused ({error}), the reference accepted"
        return
    assert ref.ok, f"the reference refused ({ref.error}), we accepted"
    assert sorted(keys) == list(ref.keys)
    for key in ref.keys:
        assert parse_annotations({key: annotations[key]})[1] == list(ref.devices[key])


KEYS = [
    ("nvidia.com.gpu", "0", [GPU + "0"]),
    ("nvidia.com.gpu", "dev/0", [GPU + "0", GPU + "1"]),
    ("", "x", [GPU + "0"]),
    ("p", "", [GPU + "0"]),
    ("plugin", "x" * 60, [GPU + "0"]),
    ("_bad", "id", [GPU + "0"]),
    ("p", "id_", [GPU + "0"]),
    ("vendor", "a b", [GPU + "0"]),
    ("a", "b.c-d", [GPU + "0"]),
    ("a", "b", ["0"]),
    ("a", "b", []),
]


@pytest.mark.parametrize(("plugin", "device_id", "devices"), KEYS)
def test_annotation_key_and_value(
    reference: judge.Reference, plugin: str, device_id: str, devices: list[str]
) -> None:
    try:
        expected = reference.annotation_key(plugin, device_id, devices)
    except ValueError as error:
        with pytest.raises(AnnotationError):
            update_annotations({}, plugin, device_id, devices)
        del error
        return
    assert update_annotations({}, plugin, device_id, devices) == dict([expected])
    assert annotation_key(plugin, device_id) == expected[0]
