"""`gpu-cdi-nri`: run the NRI plugin (default), or `gpu-cdi-nri health` to probe a running one.

Settings come from `--config FILE` (YAML, docs/nri-plugin.md) overlaid by flags. SIGTERM or
SIGINT stops the plugin cleanly (connection closed, watches removed, exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from nri_plugin.config import LOG_LEVELS, MODES, Config, ConfigError, load_file, with_flags
from nri_plugin.metrics import MetricsUnavailable

PROG = "gpu-cdi-nri"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by tests of the deploy manifests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="NRI plugin giving containers the CDI devices they request "
        "(annotations or NVIDIA_VISIBLE_DEVICES).",
    )
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
    health = sub.add_parser("health", help="exit 0 if a running plugin is registered")
    health.add_argument("--metrics-port", type=int, required=True, metavar="PORT")
    health.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDR")
    return parser


class _Formatter(logging.Formatter):
    """logfmt lines: our records are logfmt already, other libraries' become msg="..."."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not record.name.startswith("gpu_cdi"):
            message = 'msg="' + message.replace("\\", "\\\\").replace('"', '\\"') + '"'
        stamp = self.formatTime(record, self.datefmt)
        line = f"time={stamp} level={record.levelname.lower()} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str) -> None:
    """Log to stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # their debug output (every inotify event, the selector) would drown ours
    for noisy in ("watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


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


async def serve(config: Config) -> int:
    """Run the plugin until a signal (or, pre-installed, until the runtime goes away)."""
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
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stub.stop)
    log.info(
        "msg=starting plugin=%s socket=%s spec_dirs=%s mode=%s",
        stub.full_name,
        stub.socket_path,
        ",".join(config.spec_dirs),
        config.mode,
    )
    try:
        await stub.run()
    except (ConnectionClosed, ProtocolError) as error:
        log.error('msg="connection lost" error="%s"', error)
        return 1
    finally:
        registry.close()
        if server is not None:
            server.close()
    log.info("msg=stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpu-cdi-nri`."""
    args = build_parser().parse_args(argv)
    if args.command == "health":
        from nri_plugin.metrics import check_health

        ok, said = check_health(args.metrics_port, args.metrics_address)
        print(said, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    try:
        config = load_config(args)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if not os.path.isdir(config.host_root):
        state = "not a directory" if os.path.exists(config.host_root) else "no such directory"
        print(
            f"{PROG}: error: host root {config.host_root}: {state} (where the host's / should "
            "be mounted in this container, e.g. a hostPath volume of / at /host)",
            file=sys.stderr,
        )
        return 2
    setup_logging(config.log_level)
    try:
        return asyncio.run(serve(config))
    except (ValueError, MetricsUnavailable) as error:
        # the stub refuses a bad name/index from the runtime's env; metrics without the package
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the metrics port is taken
        print(f"{PROG}: error: {error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
