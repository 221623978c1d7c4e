"""The NRI and ttrpc .proto files Debian ships, for the conformance test (and `newest_file`
for other -dev packages: the kubelet device-plugin API).

NRI 0.6.1 (trixie's golang-github-containerd-nri-dev, what containerd 1.7.24 was built with)
and ttrpc come from tests/e2e/install.sh. The newest NRI Debian has (sid/experimental
candidate) is fetched here, once, with a private apt configuration (nothing of the system's
apt setup is touched) and cached under .cache/nri-api/<version>/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e import paths

NRI_PACKAGE = "golang-github-containerd-nri-dev"
API_IN_PACKAGE = "usr/share/gocode/src/github.com/containerd/nri/pkg/api/api.proto"
TTRPC_DIR = paths.GOCODE / "github.com" / "containerd" / "ttrpc"
CACHE = paths.CACHE / "nri-api"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITES = ("sid", "experimental")


class DebianFetchError(Exception):
    """apt could not tell or fetch the newest NRI package."""


def _mirror() -> str:
    """The Debian mirror of the trixie config install.sh wrote, else deb.debian.org."""
    trixie_dir = Path(os.environ.get("TRIXIE_DIR", "/var/cache/gpu-cdi/trixie"))
    for sources in (trixie_dir / "sources.list", Path("/tmp/trixie/sources.list")):
        if sources.is_file():
            for line in sources.read_text(encoding="utf-8").splitlines():
                words = [w for w in line.split() if not w.startswith("[") and "=" not in w]
                if len(words) >= 3 and words[0] == "deb":
                    return words[1]
    return "http://deb.debian.org/debian"


def _apt_options(state: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", "Dir::Etc::PreferencesParts=/dev/null",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::State::Status={state / 'status'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Retries=3",
    ]  # fmt: skip


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300)
    if proc.returncode != 0:
        raise DebianFetchError(f"{' '.join(argv[:2])} ... failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def newest_nri_api() -> tuple[str, Path]:
    """(version, path of api.proto) of the newest NRI -dev package in Debian sid/experimental."""
    return newest_file(NRI_PACKAGE, API_IN_PACKAGE, CACHE)


def newest_file(package: str, in_package: str, cache: Path) -> tuple[str, Path]:
    """(version, local copy of `in_package`) from the newest `package` in sid/experimental,
    cached under `cache/<version>/`."""
    state = CACHE / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    mirror = _mirror()
    (state / "sources.list").write_text(
        "".join(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n" for suite in SUITES),
        encoding="utf-8",
    )
    opts = _apt_options(state)
    stamp = state / "updated"
    if not stamp.exists() or time.time() - stamp.stat().st_mtime > 86400:  # lists go stale
        _run(["apt-get", *opts, "update", "-qq"])
        stamp.touch()
    policy = _run(["apt-cache", *opts, "policy", package])
    candidate = next(
        (line.split(":", 1)[1].strip() for line in policy.splitlines() if "Candidate:" in line),
        "(none)",
    )
    if candidate == "(none)":
        raise DebianFetchError(f"no {package} in Debian {'/'.join(SUITES)} ({mirror})")
    target = cache / candidate / Path(in_package).name
    if not target.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _run(["apt-get", *opts, "download", "-qq", f"{package}={candidate}"], Path(tmp))
            debs = list(Path(tmp).glob("*.deb"))
            if len(debs) != 1:
                raise DebianFetchError(f"apt-get download left {debs} in {tmp}")
            _run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "root")])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "root" / in_package, target)
    return candidate, target
