"""Settings from flags, environment and NVIDIA's config file: precedence and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_plugin import config
from device_plugin.config import ConfigError, SharedResource, TimeSlicing
from tests.device_plugin.support import run


def load(argv: list[str], env: dict[str, str] | None = None) -> config.Settings:
    args = config.build_parser("p", "d").parse_args(argv)
    return config.load(args, env or {})


def test_defaults_are_nvidias() -> None:
    s = load([])
    assert s.mig_strategy == "none"
    assert s.fail_on_init_error is True
    assert s.device_list_strategy == ("envvar",)
    assert s.device_id_strategy == "uuid"
    assert s.kubelet_socket == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert s.cdi_annotation_prefix == "cdi.k8s.io/"
    assert s.kind == "nvidia.com/gpu"
    assert s.pass_device_specs is False


def test_flag_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: v1\nflags:\n  migStrategy: single\n  failOnInitError: false\n"
        "  plugin:\n    deviceListStrategy: [cdi-cri, envvar]\n    deviceIDStrategy: index\n"
    )
    s = load(["--config-file", str(path)])
    assert (s.mig_strategy, s.fail_on_init_error) == ("single", False)
    assert s.device_list_strategy == ("cdi-cri", "envvar")
    assert s.device_id_strategy == "index"
    s = load(["--config-file", str(path)], {"MIG_STRATEGY": "mixed", "DEVICE_ID_STRATEGY": "uuid"})
    assert (s.mig_strategy, s.device_id_strategy) == ("mixed", "uuid")
    s = load(["--config-file", str(path), "--mig-strategy", "none"], {"MIG_STRATEGY": "mixed"})
    assert s.mig_strategy == "none"
    s = load([], {"CONFIG_FILE": str(path)})  # the file named by the environment
    assert s.mig_strategy == "single"


def test_repeatable_and_comma_lists() -> None:
    s = load(
        ["--device-list-strategy", "envvar", "--device-list-strategy", "cdi-cri,cdi-annotations"]
    )
    assert s.device_list_strategy == ("envvar", "cdi-cri", "cdi-annotations")
    assert load([], {"DEVICE_LIST_STRATEGY": "cdi-cri"}).device_list_strategy == ("cdi-cri",)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--mig-strategy", "both"],
            {},
            'command line: --mig-strategy: invalid value "both" (one of: none, single, mixed)',
        ),
        ([], {"MIG_STRATEGY": "Mixed"}, 'environment: MIG_STRATEGY: invalid value "Mixed"'),
        (
            ["--fail-on-init-error=maybe"],
            {},
            "command line: --fail-on-init-error: expected true or false, got 'maybe'",
        ),
        (
            ["--device-list-strategy", "cdi"],
            {},
            'invalid value "cdi" (one of: envvar, volume-mounts, cdi-annotations, cdi-cri)',
        ),
        (
            ["--device-list-strategy", "volume-mounts"],
            {},
            "volume-mounts: needs NVIDIA's container runtime",
        ),
        (
            ["--driver-root", "run/nvidia/driver"],
            {},
            '--driver-root: "run/nvidia/driver" is not an absolute path',
        ),
        (["--cdi-vendor", "nvidia_"], {}, 'CDI kind "nvidia_/gpu"'),
        (
            ["--cdi-annotation-prefix", "cdi.k8s.io"],
            {},
            'cdi-annotation-prefix "cdi.k8s.io": expected a domain',
        ),
        (
            ["--inventory", "x.yaml", "--library-search-path", "/lib"],
            {},
            "--inventory conflicts with --host-root, --proc-sys-root and --library-search-path",
        ),
        (
            ["--inventory", "x.yaml", "--host-root", "/host"],
            {},
            "--inventory conflicts with --host-root",
        ),
    ],
)
def test_bad_values_name_source_key_and_value(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(argv, env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flags:\n  migStrategy: mixed\n  mpsRoot: /run\n", 'unknown key "flags.mpsRoot"'),
        (
            "flags:\n  plugin:\n    passDeviceSpec: true\n",
            'unknown key "flags.plugin.passDeviceSpec"',
        ),
        ("gfd:\n  oneshot: true\n", 'unknown key "gfd"'),
        ("version: v2\n", "version: 'v2' is not supported (only v1)"),
        ("flags: [1]\n", 'unknown key "flags"'),
        ("flags:\n  failOnInitError: 3\n", "flags.failOnInitError: expected true or false, got 3"),
        ("flags:\n  migStrategy: [mixed]\n", "flags.migStrategy: expected a string"),
        ("resources:\n  gpus: []\n", "resources: renaming resources is not supported"),
        ("sharing:\n  mps: {}\n", 'unknown key "sharing.mps"'),
        (
            "sharing:\n  timeSlicing:\n    resources:\n"
            "    - name: nvidia.com/gpu\n      replicas: 1\n",
            "replicas: 1: at least 2",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n",
            "replicas: expected an integer, got None",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n"
            "    - {name: nvidia.com/gpu, replicas: 2, devices: all}\n",
            "devices: not supported",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n"
            "    - {name: nvidia.com/gpu, replicas: 3}\n",
            "is shared twice",
        ),
        ("flags: {migStrategy: mixed\n", "not a YAML config file"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(["--config-file", str(path)])
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load(["--config-file", str(tmp_path / "none.yaml")])


def test_time_slicing() -> None:
    text = (
        "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n"
        "    failRequestsGreaterThanOne: true\n    resources:\n"
        "    - name: nvidia.com/gpu\n      replicas: 4\n"
        "    - name: nvidia.com/mig-1g.5gb\n      replicas: 2\n      rename: small\n"
    )
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as stream:
        stream.write(text)
        stream.flush()
        s = load(["--config-file", stream.name])
    assert s.time_slicing == TimeSlicing(
        (SharedResource("nvidia.com/gpu", 4), SharedResource("nvidia.com/mig-1g.5gb", 2, "small")),
        rename_by_default=True,
        fail_requests_greater_than_one=True,
    )


def test_cli_bad_settings_are_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("flags:\n  nope: 1\n")
    proc = run(["--config-file", str(path)])
    assert proc.returncode == 2
    assert proc.stderr == f'gpu-cdi-device-plugin: error: {path}: unknown key "flags.nope"\n'
    proc = run([], {"DP_DISABLE_HEALTHCHECKS": "48,abc"})
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "DP_DISABLE_HEALTHCHECKS: 'abc' is not an XID number, 'xids' or 'all'"
    )


def test_help_names_the_env_vars() -> None:
    proc = run(["--help"])
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for flag, env in (
        ("--mig-strategy", "MIG_STRATEGY"),
        ("--device-list-strategy", "DEVICE_LIST_STRATEGY"),
        ("--kubelet-socket", "KUBELET_SOCKET"),
        ("--driver-root", "NVIDIA_DRIVER_ROOT"),
    ):
        assert flag in text and f"[env {env}]" in text
