"""The hand-written command-line parser: chaining, flag values, and every usage error."""

from __future__ import annotations

import pytest

from cdi.hook.args import DEFAULT_LDCONFIG, parse, split_steps
from cdi.hook.errors import UsageError


def steps(argv: list[str]) -> list[tuple[str, dict[str, list[str]]]]:
    return [(s.action, s.options) for s in split_steps(argv)]


def test_chained_actions_split_at_action_names() -> None:
    argv = [
        "create-symlinks", "--link", "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
        "--link", "a::/b",
        "update-ldcache", "--folder", "/usr/lib/x86_64-linux-gnu", "--folder=/usr/lib/vdpau",
        "disable-device-node-modification",
        "enable-cuda-compat", "--host-driver-version=550.163.01",
    ]  # fmt: skip
    assert steps(argv) == [
        ("create-symlinks", {"--link": ["libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
                                        "a::/b"]}),
        ("update-ldcache", {"--folder": ["/usr/lib/x86_64-linux-gnu", "/usr/lib/vdpau"]}),
        ("disable-device-node-modification", {}),
        ("enable-cuda-compat", {"--host-driver-version": ["550.163.01"]}),
    ]  # fmt: skip


def test_a_flag_value_equal_to_an_action_name_is_a_value() -> None:
    result = steps(["chmod", "--path", "chmod", "--mode", "755", "chmod", "--mode", "700"])
    assert result == [
        ("chmod", {"--path": ["chmod"], "--mode": ["755"]}),
        ("chmod", {"--mode": ["700"]}),
    ]


def test_same_action_twice_runs_twice_in_order() -> None:
    bound = parse(["create-symlinks", "--link", "a::/x", "create-symlinks", "--link", "b::/y"])
    assert [name for name, _ in bound] == ["create-symlinks", "create-symlinks"]


def test_ldconfig_path_defaults_to_host_sbin() -> None:
    assert DEFAULT_LDCONFIG == "/sbin/ldconfig"
    assert steps(["update-ldcache"]) == [("update-ldcache", {})]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "no action given"),
        (["make-coffee"], "unknown action 'make-coffee'"),
        (["--link", "a::/b"], "unknown action '--link'"),
        (["create-symlinks", "--lnk", "a::/b"], "create-symlinks: unknown flag --lnk"),
        (["disable-device-node-modification", "--force"], "unknown flag --force (allowed: none)"),
        (["create-symlinks", "--link"], "create-symlinks: flag --link needs a value"),
        (["create-symlinks", "stray"], "unexpected argument 'stray'"),
        (["update-ldcache", "--ldconfig-path", "/a", "--ldconfig-path", "/b"], "more than once"),
        (["create-symlinks", "--link", "no-separator"], "is not TARGET::LINK"),
        (["create-symlinks", "--link", "::/x"], "is not TARGET::LINK"),
        (["create-symlinks", "--link", "a::relative/x"], "not an absolute container path"),
        (["update-ldcache", "--folder", "lib"], "--folder 'lib' is not an absolute"),
        (["update-ldcache", "--ldconfig-path", "ldconfig"], "not an absolute host path"),
        (["enable-cuda-compat"], "--host-driver-version is required"),
        (["enable-cuda-compat", "--host-driver-version", "v550"], "'v550' is not N.N[.N]"),
        (["chmod", "--mode", "755"], "--path is required"),
        (["chmod", "--path", "/dev/dri"], "--mode is required"),
        (["chmod", "--mode", "rwx", "--path", "/dev/dri"], "--mode 'rwx' is not an octal mode"),
        (["chmod", "--mode", "99", "--path", "/dev/dri"], "is not an octal mode"),
    ],
)
def test_usage_errors_name_action_flag_and_value(argv: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(argv)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_everything_is_checked_before_anything_runs() -> None:
    # The bad flag is in the last action: parse fails as a whole, so no action can have run.
    with pytest.raises(UsageError, match="chmod: unknown flag --recursive"):
        parse(["create-symlinks", "--link", "a::/b", "chmod", "--recursive"])
