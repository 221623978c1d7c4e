"""Config: YAML file + flags, with errors naming file, key and value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nri_plugin.config import Config, ConfigError, from_text, load_file, with_flags
from nri_plugin.policy import Policy

FULL = """
socket: /run/nri.sock
mode: native
spec_dirs: [/a, /b]
plugin_name: gpu-cdi
plugin_idx: "42"
env_kind: example.com/gpu
void_visible_devices: false
metrics_port: 9464
log_level: debug
policy:
  annotation_namespaces: [ml, gpu]
  management_namespaces: [gpu-operator]
  allowed_kinds: [nvidia.com/gpu, management.nvidia.com/gpu]
  env_unprivileged: false
  runtime_cdi: skip
"""


def test_defaults() -> None:
    config = Config()
    assert config.mode == "auto"
    assert config.spec_dirs == ("/etc/cdi", "/var/run/cdi")
    assert config.policy == Policy()
    assert config.policy.annotation_namespaces is None
    assert config.policy.management_kinds == {"management.nvidia.com/gpu"}
    assert from_text("", "f.yaml") == config


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "nri.yaml"
    path.write_text(FULL)
    config = load_file(str(path))
    assert config.socket == "/run/nri.sock"
    assert config.mode == "native"
    assert config.spec_dirs == ("/a", "/b")
    assert config.plugin_idx == "42"
    assert config.env_kind == "example.com/gpu"
    assert config.void_visible_devices is False
    assert config.metrics_port == 9464
    assert config.policy == Policy(
        annotation_namespaces=frozenset({"ml", "gpu"}),
        management_namespaces=frozenset({"gpu-operator"}),
        allowed_kinds=frozenset({"nvidia.com/gpu", "management.nvidia.com/gpu"}),
        env_unprivileged=False,
        runtime_cdi="skip",
    )


def test_flags_override_the_file_and_unset_flags_do_not() -> None:
    config = from_text("mode: native\nplugin_idx: '30'\n", "f.yaml")
    flagged = with_flags(
        config, {"mode": "resolve", "spec_dirs": ["/x"], "plugin_idx": None, "socket": None}
    )
    assert flagged.mode == "resolve"
    assert flagged.spec_dirs == ("/x",)
    assert flagged.plugin_idx == "30"
    assert flagged.socket == Config().socket


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: fast", 'f.yaml: mode: invalid value "fast" (one of: auto, resolve, native)'),
        ("modes: auto", "f.yaml: modes: unknown key"),
        ("- a", "f.yaml: expected a mapping of settings, got a list"),
        ("metrics_port: 70000", "f.yaml: metrics_port: expected a port number 0-65535, got int"),
        ("plugin_idx: '5'", 'f.yaml: plugin_idx: invalid plugin index "5" (exactly two digits'),
        ("plugin_idx: 10", "f.yaml: plugin_idx: expected a string, got integer 10"),
        ("plugin_name: 'a b'", 'f.yaml: plugin_name: invalid plugin name "a b"'),
        ("spec_dirs: /etc/cdi", 'f.yaml: spec_dirs: expected a list of strings, got string "/etc'),
        ("spec_dirs: []", "f.yaml: spec_dirs: needs at least one directory"),
        ("env_kind: gpu", 'f.yaml: env_kind: invalid device kind "gpu": expected vendor/class'),
        ("void_visible_devices: yes please", "void_visible_devices: expected true or false"),
        ("policy: {runtime_cdi: maybe}", 'f.yaml: policy.runtime_cdi: invalid value "maybe"'),
        ("policy: {namespaces: [a]}", "f.yaml: policy.namespaces: unknown key"),
        ("policy: {allowed_kinds: [nvidia.com/g]}", "policy.allowed_kinds[0]: invalid device kind"),
        ("policy: {management_namespaces: [1]}", "policy.management_namespaces[0]: expected a"),
        ("mode: [", "f.yaml: invalid YAML: line 2, column 1: did not find expected node"),
        ("mode: auto\nmode: native", 'f.yaml: invalid YAML: line 2, column 1: duplicate key "mo'),
        ("policy: {runtime_cdi: auto, runtime_cdi: skip}", 'duplicate key "runtime_cdi"'),
        ("socket: ''", "f.yaml: socket: must not be empty"),
        ("spec_dirs: ['']", "f.yaml: spec_dirs[0]: must not be empty"),
        ("reconnect_seconds: 0", "f.yaml: reconnect_seconds: expected a positive number of"),
        ("void_visible_devices: 0.5", "void_visible_devices: expected true or false, got YAML"),
        ("policy: [a]", "f.yaml: policy: expected a mapping, got a list"),
    ],
)
def test_bad_values_name_file_key_and_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_text(text, "f.yaml")
    assert message in str(caught.value)


def test_bad_flags_are_named_as_flags() -> None:
    with pytest.raises(ConfigError, match="command line: --plugin-idx: invalid plugin index"):
        with_flags(Config(), {"plugin_idx": "100"})
    with pytest.raises(ConfigError, match="command line: --metrics-port: expected a port"):
        with_flags(Config(), {"metrics_port": -1})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"/nonexistent\.yaml: cannot read the config file"):
        load_file("/nonexistent.yaml")


def test_null_namespaces_mean_all_and_empty_list_means_none() -> None:
    assert (
        from_text("policy: {annotation_namespaces: null}", "f").policy.annotation_namespaces is None
    )
    assert (
        from_text("policy: {annotation_namespaces: []}", "f").policy.annotation_namespaces == set()
    )


def test_non_string_keys_are_reported_not_crashed_on() -> None:
    with pytest.raises(ConfigError, match=r"f\.yaml: invalid YAML: line 1, column 1: mapping key"):
        from_text("1: a\nmode: auto\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"f\.yaml: invalid YAML: line 1, column 10: mapping "):
        from_text("policy: {2: a, runtime_cdi: auto}", "f.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00", "invalid YAML: unacceptable character #x007f"),
        (b"mode: \xff\xfe", "invalid YAML: unacceptable character #x00ff"),
        (b"[" * 100_000, "invalid YAML: line 1, column 1001: exceeded maximum nesting depth"),
        (b"policy: " + b"{a: " * 100_000, "exceeded maximum nesting depth"),
    ],
)
def test_binary_and_deeply_nested_files_are_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "nri.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_file(str(path))
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "nri.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"read the config file: not a regular file \(a FIFO\)"):
        load_file(str(fifo))
    with pytest.raises(ConfigError, match=r"not a regular file \(a directory\)"):
        load_file(str(tmp_path))
