"""A small NRI plugin built on nri_plugin.protocol, run as a process by tests and benchmarks.

    python -m tests.nri.sample_plugin --socket PATH [--name N --idx NN] [--mode MODE]
                                      [--record FILE] [--answer FILE]

Modes:
  trivial   CreateContainer answered with an empty adjustment (benchmarks), or with
            --answer, always with the adjustment that file holds serialized (encoded once:
            a plugin answering from a cache, as bench/nri_go_trivial -answer does in Go)
  adjust    env GPU_CDI_TEST=<container name>, device /dev/gpu-cdi-null (char 1:3, 0666),
            a read-only bind mount of --mount-source at /gpu-cdi-test, annotation
            gpu-cdi.test/adjusted=<container name>; a container annotated
            gpu-cdi.test/fail=<message>, or whose pod is annotated
            gpu-cdi.test/fail.<container name>=<message>, is failed with INVALID_ARGUMENT
            and that message.
Every CreateContainer is appended to --record as one JSON line (container id, name, pid of
this process); "configured" and "synchronized" are printed as the handshake goes.
When started by the runtime (NRI_PLUGIN_SOCKET set) the name and index come from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from nri_plugin.protocol import Code, Plugin, RpcError, api, run_plugin

FAIL_ANNOTATION = "gpu-cdi.test/fail"
ADJUSTED_ANNOTATION = "gpu-cdi.test/adjusted"
ENV_KEY = "GPU_CDI_TEST"
DEVICE_PATH = "/dev/gpu-cdi-null"
MOUNT_DEST = "/gpu-cdi-test"


class Announcing(Plugin):
    """Prints "configured" and "synchronized" on stdout as the handshake progresses."""

    async def configure(self, request: api.ConfigureRequest) -> int | None:
        print("configured", flush=True)
        return None

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> None:
        print("synchronized", flush=True)


class Trivial(Announcing):
    """Answers CreateContainer with no adjustment (a plain `def`: the inline fast path)."""

    def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment:
        return api.ContainerAdjustment()


class Answering(Announcing):
    """Answers every CreateContainer with the same adjustment, encoded once."""

    def __init__(self, adjustment: bytes) -> None:
        response = api.CreateContainerResponse(
            adjust=api.ContainerAdjustment.FromString(adjustment)
        )
        self.encoded = response.SerializeToString()

    def create_container(self, pod: api.PodSandbox, container: api.Container) -> bytes:
        return self.encoded


class Adjuster(Announcing):
    """Adjusts env, devices, mounts and annotations; fails containers on request."""

    def __init__(self, record: str | None, mount_source: str) -> None:
        self.record = record
        self.mount_source = mount_source

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment:
        self._record(container)
        reason = container.annotations.get(FAIL_ANNOTATION) or pod.annotations.get(
            f"{FAIL_ANNOTATION}.{container.name}"
        )
        if reason:
            raise RpcError(Code.INVALID_ARGUMENT, reason)
        adjust = api.ContainerAdjustment()
        adjust.env.add(key=ENV_KEY, value=container.name)
        adjust.annotations[ADJUSTED_ANNOTATION] = container.name
        adjust.linux.devices.add(
            path=DEVICE_PATH, type="c", major=1, minor=3
        ).file_mode.value = 0o666
        adjust.mounts.add(
            destination=MOUNT_DEST,
            type="bind",
            source=self.mount_source,
            options=["bind", "ro"],
        )
        return adjust

    def _record(self, container: api.Container) -> None:
        if not self.record:
            return
        line = json.dumps({"id": container.id, "name": container.name, "pid": os.getpid()})
        with open(self.record, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default=None)
    ap.add_argument("--name", default="sample")
    ap.add_argument("--idx", default="50")
    ap.add_argument("--mode", choices=("trivial", "adjust"), default="trivial")
    ap.add_argument("--record", default=None)
    ap.add_argument("--mount-source", default="/etc")
    ap.add_argument("--answer", metavar="FILE", help="trivial mode: answer this adjustment")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    plugin: Plugin
    if args.mode == "adjust":
        plugin = Adjuster(args.record, args.mount_source)
    elif args.answer:
        with open(args.answer, "rb") as f:
            plugin = Answering(f.read())
    else:
        plugin = Trivial()
    return run_plugin(plugin, name=args.name, idx=args.idx, socket_path=args.socket)


if __name__ == "__main__":
    sys.exit(main())
