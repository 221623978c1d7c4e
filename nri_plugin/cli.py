"""`gpu-cdi-nri`: run the NRI plugin (default), or `gpu-cdi-nri health` to probe a running one.

Settings come from `--config FILE` (YAML, docs/nri-plugin.md) overlaid by flags. SIGTERM or
SIGINT stops the plugin cleanly (connection closed, watches removed, exit status 0).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from cdi.release import VersionAction
from nri_plugin.config import LOG_LEVELS, MODES, Config, ConfigError, load_file, with_flags
from nri_plugin.log import StderrHandler, logfmt, setup_logging
from nri_plugin.metrics import MetricsUnavailable

PROG = "gpu-cdi-nri"
LOG_BATCH_SECONDS = 0.02
"""How long a request's log line may wait for others to be written with it."""


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without `shutil` (argparse builds one for every flag it
    adds, and shutil's imports weigh half a megabyte in a process that lives for months)."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            width = 80
        super().__init__(prog, width=max(width - 2, 40))


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by tests of the deploy manifests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="NRI plugin giving containers the CDI devices they request "
        "(annotations or NVIDIA_VISIBLE_DEVICES).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--config", metavar="FILE", help="YAML config file (flags override it)")
    parser.add_argument("--socket", metavar="PATH", help="NRI socket of the runtime")
    parser.add_argument("--mode", choices=MODES, help="how devices reach the container")
    parser.add_argument(
        "--spec-dir",
        dest="spec_dirs",
        action="append",
        metavar="DIR",
        help="CDI spec dir, lowest priority first (repeatable; default /etc/cdi /var/run/cdi)",
    )
    parser.add_argument("--plugin-name", metavar="NAME", help="name to register with")
    parser.add_argument("--plugin-idx", metavar="NN", help="two-digit plugin index")
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve /metrics and /healthz (0: off)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS)
    parser.add_argument(
        "--containerd-config",
        metavar="FILE",
        help="containerd's config file, to tell whether it resolves CDI names (default: "
        "from the runtime's command line)",
    )
    parser.add_argument(
        "--host-root",
        metavar="DIR",
        help="where the host's / is mounted in this container, e.g. /host: device nodes are "
        "read under it in resolve mode (default /)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    health = sub.add_parser(
        "health", help="exit 0 if a running plugin is registered", formatter_class=_HelpFormatter
    )
    health.add_argument("--metrics-port", type=int, required=True, metavar="PORT")
    health.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDR")
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The config file (if any) with the given flags applied."""
    config = load_file(args.config) if args.config else Config()
    flags = {
        "socket": args.socket,
        "mode": args.mode,
        "spec_dirs": args.spec_dirs,
        "plugin_name": args.plugin_name,
        "plugin_idx": args.plugin_idx,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
        "containerd_config": args.containerd_config,
        "host_root": args.host_root,
    }
    return with_flags(config, flags)


def release_freed_memory() -> None:
    """Hand the C heap that start-up freed back to the system (glibc's malloc_trim).

    Imports and the first spec load free about a megabyte inside the heap that the resident
    size would otherwise go on counting. A no-op where the C library has no malloc_trim.
    """
    import ctypes  # loaded already: the registry's inotify watch uses it

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


async def serve(config: Config, log_handler: StderrHandler | None = None) -> int:
    """Run the plugin until a signal (or, pre-installed, until the runtime goes away).

    With `log_handler`, a failed write to the log also stops the plugin (status 1).
    """
    import asyncio

    from cdi.registry import Registry
    from nri_plugin.metrics import Metrics, MetricsServer
    from nri_plugin.plugin import GpuCdiPlugin, log_refresh
    from nri_plugin.protocol import ConnectionClosed, ProtocolError, Stub
    from nri_plugin.runtime_cdi import RuntimeProbe

    log = logging.getLogger("gpu_cdi.nri")
    metrics = Metrics(enabled=config.metrics_port != 0)
    registry = Registry(config.spec_dirs, auto_refresh=True, on_refresh=log_refresh)
    probe = RuntimeProbe(config.containerd_config, host_root=config.host_root)
    plugin = GpuCdiPlugin(config, registry, metrics, probe)
    stub = Stub(
        plugin,
        name=config.plugin_name,
        idx=config.plugin_idx,
        socket_path=config.socket,
        max_backoff=config.reconnect_seconds,
    )
    probe.runtime_pid = lambda: stub.peer_pid
    server = None
    if config.metrics_port:
        server = MetricsServer(
            metrics, stub.configured.is_set, config.metrics_address, config.metrics_port
        )
    # Everything loaded so far lives as long as the process: keep the cyclic GC from
    # re-scanning it on the CreateContainer path (pauses there count against the deadline).
    gc.collect()
    gc.freeze()
    release_freed_memory()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stub.stop)
    if log_handler is not None:

        def stop_soon() -> None:  # threadsafe: the registry logs from its own thread
            loop.call_soon_threadsafe(stub.stop)

        log_handler.on_failure = stop_soon
        # a request's log line after its answer; lines of a busy moment in one write
        log_handler.defer = lambda flush: loop.call_later(LOG_BATCH_SECONDS, flush)
        if log_handler.failure is not None:  # before the callback was there
            stub.stop()
    log.info(
        "%s",
        logfmt(
            msg="starting",
            plugin=stub.full_name,
            runtime=stub.endpoint,
            spec_dirs=",".join(config.spec_dirs),
            mode=config.mode,
        ),
    )
    try:
        await stub.run()
    except (ConnectionClosed, ProtocolError) as error:
        log.error("%s", logfmt(msg="stopped", error=error))
        return 1
    finally:
        registry.close()
        if server is not None:
            server.close()
        if log_handler is not None:
            log_handler.defer = None
            log_handler.flush_pending()
    if log_handler is not None and log_handler.failure is not None:
        return 1
    log.info("msg=stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpu-cdi-nri`."""
    args = build_parser().parse_args(argv)
    if args.command == "health":
        from nri_plugin.metrics import check_health

        ok, said = check_health(args.metrics_port, args.metrics_address)
        failed = say(said, sys.stdout if ok else sys.stderr)
        if failed is not None:
            say(f"{PROG}: error: cannot write the answer: {failed.strerror or failed}", sys.stderr)
            return 1
        return 0 if ok else 1
    try:
        config = load_config(args)
    except ConfigError as error:
        say(f"{PROG}: error: {error}", sys.stderr)
        return 2
    if not os.path.isdir(config.host_root):
        state = "not a directory" if os.path.exists(config.host_root) else "no such directory"
        say(
            f"{PROG}: error: host root {config.host_root} (--host-root, or host_root in the "
            f"config): {state} (where the host's / should "
            "be mounted in this container, e.g. a hostPath volume of / at /host)",
            sys.stderr,
        )
        return 2
    handler = setup_logging(config.log_level)
    if not config.metrics_port:
        # Nothing in the plugin speaks TLS, but asyncio loads the ssl module when it can:
        # without it the process is ~5 MB smaller (libssl, libcrypto). The metrics server
        # keeps it (prometheus_client imports it).
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import asyncio

    try:
        code = asyncio.run(serve(config, handler))
    except (ValueError, MetricsUnavailable) as error:
        # the stub refuses a bad name/index from the runtime's env; metrics without the package
        code, message = 2, str(error)
    except OSError as error:  # e.g. the metrics port is taken
        code, message = 1, error.strerror or str(error)
    else:
        if handler.failure is None:
            return code
        message = f"cannot write the log to stderr: {handler.failure.strerror or handler.failure}"
    say(f"{PROG}: error: {message}", sys.stderr)
    return code


def say(line: str, stream: TextIO) -> OSError | None:
    """Write one line and flush; the error if that failed (the stream is then silenced)."""
    try:
        print(line, file=stream, flush=True)
    except OSError as error:
        # Nothing more can be said there, and Python's own flush at exit must not fail
        # (it would print a traceback and turn the status into 120).
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        return error
    return None


if __name__ == "__main__":
    sys.exit(main())
