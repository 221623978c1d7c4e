#!/usr/bin/env bash
# Install every system package the test suite needs, on a Debian bookworm machine, as root.
# Idempotent: a second run only checks and prints what is there. Run by .ci/run before `make test`.
#
#   bash tests/e2e/install.sh
#
# 1. bookworm (system apt sources, `apt-get update` once if anything is missing): runc,
#    busybox-static (offline image), binutils (objdump: glibc check), podman, hyperfine,
#    systemd (systemd-analyze verify), iproute2, gcc/make/libc6-dev (fake libnvidia-ml.so.1),
#    python3-venv/python3-dev, debian-archive-keyring (trixie signatures), patchelf (podman 5).
# 2. Debian trixie and sid, through tests/e2e/debian-apt.sh (a separate apt config per suite in
#    /var/cache/gpu-cdi/<suite>, which also caches the .debs; the system's sources are never
#    modified), only unpacked with dpkg -x into $GPU_CDI_E2E_PREFIX (default /opt/gpu-cdi-e2e):
#      containerd/  trixie: containerd 1.7.24 + golang-github-containerd-{nri,ttrpc}-dev +
#                   golang-github-kubernetes-cri-api-dev (.proto files for NRI and CRI)
#      containerd2/ sid: containerd 2.1.x (its binaries need only glibc 2.34; runc from bookworm)
#      docker/      sid: docker.io + docker-cli 28.x, tini-static (docker-init); dockerd runs
#                   containerd2's containerd
#      kubelet/     sid: golang-github-kubernetes-kubelet-dev (device-plugin api.proto)
#      go/          trixie: golang-1.24-go + golang-1.24-src, only if no Go >= 1.21 is installed;
#                   then /usr/local/bin/go links to it (when `go` is not on PATH yet)
#      podman5/     trixie: podman 5.4, netavark + aardvark-dns (usr/lib/podman: podman's
#                   helper_binaries_dir) + trixie glibc; those binaries are patched to use that
#                   glibc (bookworm's podman 4.3 stays /usr/bin/podman; conmon and runc are
#                   bookworm's)
#    and writes $GPU_CDI_E2E_PREFIX/env (shell-sourceable paths; tests/e2e/paths.py uses the same).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${GPU_CDI_E2E_PREFIX:-/opt/gpu-cdi-e2e}
# shellcheck source=tests/e2e/debian-apt.sh
. "$HERE/debian-apt.sh"

BOOKWORM_PKGS=(
  runc busybox-static binutils podman hyperfine systemd iproute2
  gcc make libc6-dev python3-venv python3-dev debian-archive-keyring ca-certificates patchelf
)
CONTAINERD_PKGS=(
  containerd golang-github-containerd-nri-dev golang-github-containerd-ttrpc-dev
  golang-github-kubernetes-cri-api-dev
)
GO_PKGS=(golang-1.24-go golang-1.24-src)
# podman 5.4 needs GLIBC_2.38 (bookworm has 2.36): unpack trixie's glibc and the libraries podman
# links directly next to it and point its ELF interpreter + DT_RPATH there (patchelf). Libraries
# not listed here (libselinux, libpam, ...) come from bookworm, which the newer glibc still serves.
PODMAN5_PKGS=(
  podman libc6 libsubid5 libsqlite3-0 libgpgme11t64 libseccomp2 libassuan9 libgpg-error0
  libaudit1 libcap-ng0 libbsd0 libmd0 netavark aardvark-dns
)
PODMAN5_PATCHED=(usr/bin/podman usr/lib/podman/netavark usr/lib/podman/aardvark-dns)
CONTAINERD2_PKGS=(containerd)
DOCKER_PKGS=(docker.io docker-cli tini-static)
KUBELET_PKGS=(golang-github-kubernetes-kubelet-dev)

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages)"

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

install_bookworm() {
  local p missing=()
  for p in "${BOOKWORM_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    log "bookworm packages present: ${BOOKWORM_PKGS[*]}"
    return
  fi
  log "apt-get update (system sources)"
  apt-get update -qq
  local aptlog
  aptlog=$(mktemp /tmp/gpu-cdi-apt.XXXXXX)
  log "apt-get install ${missing[*]} (output: $aptlog)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >"$aptlog" 2>&1 || { tail -n 40 "$aptlog" >&2; die "apt-get install failed (full log $aptlog)"; }
  for p in "${missing[@]}"; do installed "$p" || die "package $p did not install"; done
}

# newest glibc symbol version a binary needs must not exceed the system's glibc
check_glibc() {
  local bin=$1 need have
  need=$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)
  have=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
  [ -z "$need" ] && { log "glibc: $bin needs no versioned glibc symbols"; return; }
  if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n1)" != "$have" ]; then
    die "$bin needs GLIBC_$need but this system has glibc $have"
  fi
  log "glibc: $(basename "$bin") needs GLIBC_$need, system has $have: OK"
}

install_containerd() {
  debian_unpack trixie "$PREFIX/containerd" "${CONTAINERD_PKGS[@]}"
  local bin=$PREFIX/containerd/usr/bin
  [ -x "$bin/containerd" ] || die "$bin/containerd missing after unpack"
  check_glibc "$bin/containerd"
  check_glibc "$bin/containerd-shim-runc-v2"
  log "$("$bin/containerd" --version)"
}

go_ok() {
  # prints the path of a usable go (>= 1.21)
  local c v
  for c in "${GO:-}" "$(command -v go 2>/dev/null || true)" /usr/lib/go-*/bin/go "$PREFIX"/go/usr/lib/go-*/bin/go; do
    if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
    v=$("$c" env GOVERSION 2>/dev/null | sed 's/^go//') || continue
    if [ "$(printf '%s\n1.21\n' "$v" | sort -V | head -n1)" = "1.21" ]; then echo "$c"; return 0; fi
  done
  return 1
}

install_go() {
  local go
  if ! go=$(go_ok); then
    log "no Go >= 1.21: unpacking ${GO_PKGS[*]} from trixie"
    debian_unpack trixie "$PREFIX/go" "${GO_PKGS[@]}"
    go=$(go_ok) || die "Go from trixie is not usable"
  fi
  if ! command -v go >/dev/null; then
    ln -sfn "$go" /usr/local/bin/go
    log "linked /usr/local/bin/go -> $go"
  fi
  log "Go: $go ($("$go" env GOVERSION))"
  GO_BIN=$(readlink -f "$go")
}

install_podman5() {
  local p=$PREFIX/podman5 interp rel
  debian_unpack trixie "$p" "${PODMAN5_PKGS[@]}"
  interp=$p/usr/lib64/ld-linux-x86-64.so.2
  [ -x "$interp" ] || interp=$p/lib64/ld-linux-x86-64.so.2
  [ -x "$interp" ] || die "trixie dynamic loader missing under $p"
  for rel in "${PODMAN5_PATCHED[@]}"; do
    if [ "$(patchelf --print-interpreter "$p/$rel")" != "$interp" ]; then
      patchelf --set-interpreter "$interp" --force-rpath \
        --set-rpath "$p/usr/lib/x86_64-linux-gnu:$p/lib/x86_64-linux-gnu" "$p/$rel"
    fi
    "$p/$rel" --version >/dev/null || die "trixie $(basename "$rel") does not run: $p/$rel"
  done
  log "trixie $("$p/usr/bin/podman" --version) at $p/usr/bin/podman," \
    "$("$p/usr/lib/podman/netavark" --version) (bookworm conmon/runc)"
}

# sid packages whose binaries need glibc <= bookworm's: unpacked as they are.
install_containerd2() {
  local bin=$PREFIX/containerd2/usr/bin
  debian_unpack sid "$PREFIX/containerd2" "${CONTAINERD2_PKGS[@]}"
  check_glibc "$bin/containerd"
  check_glibc "$bin/containerd-shim-runc-v2"
  log "$("$bin/containerd" --version)"
}

install_docker() {
  local d=$PREFIX/docker
  debian_unpack sid "$d" "${DOCKER_PKGS[@]}"
  check_glibc "$d/usr/sbin/dockerd"
  check_glibc "$d/usr/bin/docker"
  log "$("$d/usr/sbin/dockerd" --version)"
}

install_kubelet_api() {
  debian_unpack sid "$PREFIX/kubelet" "${KUBELET_PKGS[@]}"
}

write_env() {
  local c=$PREFIX/containerd tmp
  tmp=$(mktemp "$PREFIX/env.XXXXXX")
  cat >"$tmp" <<EOF
# written by tests/e2e/install.sh
GPU_CDI_E2E_PREFIX=$PREFIX
CONTAINERD_BIN=$c/usr/bin
CRI_PROTO=$c/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto
NRI_PROTO=$c/usr/share/gocode/src/github.com/containerd/nri/pkg/api/api.proto
NRI_GOCODE=$c/usr/share/gocode/src
GO=$GO_BIN
PODMAN5=$PREFIX/podman5/usr/bin/podman
PODMAN5_HELPERS=$PREFIX/podman5/usr/lib/podman
CONTAINERD2_BIN=$PREFIX/containerd2/usr/bin
DOCKERD=$PREFIX/docker/usr/sbin/dockerd
DOCKER=$PREFIX/docker/usr/bin/docker
KUBELET_PROTO=$PREFIX/kubelet/usr/share/gocode/src/k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto
TRIXIE_DIR=$(debian_dir trixie)
SID_DIR=$(debian_dir sid)
EOF
  chmod 0644 "$tmp"
  mv -f "$tmp" "$PREFIX/env"
  local f
  for f in CRI_PROTO NRI_PROTO KUBELET_PROTO; do
    [ -f "$(sed -n "s/^$f=//p" "$PREFIX/env")" ] || die "$f not found after unpack"
  done
}

install_bookworm
mkdir -p "$PREFIX"
install_containerd
install_go
install_podman5
install_containerd2
install_docker
install_kubelet_api
write_env
log "versions: runc $(runc --version | awk 'NR==1{print $3}')," \
  "podman $(podman --version | awk '{print $3}'), $(hyperfine --version)," \
  "busybox $(busybox | awk 'NR==1{print $2}')"
log "trixie packages: $(cat "$PREFIX"/*/.trixie-packages | tr '\n' ' ')"
log "sid packages: $(cat "$PREFIX"/*/.sid-packages | tr '\n' ' ')"
log "done: $PREFIX/env"
sed 's/^/  /' "$PREFIX/env" >&2
