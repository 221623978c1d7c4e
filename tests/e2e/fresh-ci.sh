#!/usr/bin/env bash
# Rehearse CI on a FRESH Debian bookworm: debootstrap a minimal bookworm into $FRESH_DIR (once),
# copy the working tree into it (not .venv/.cache; the chroot keeps its own), and run a command there (default: .ci/run)
# as root in a chroot inside a private mount namespace (nothing leaks to the host's mounts).
#
#   bash tests/e2e/fresh-ci.sh                   # full .ci/run
#   bash tests/e2e/fresh-ci.sh bash -c 'bash tests/e2e/install.sh && make venv'
#   FRESH_RESET=1 bash tests/e2e/fresh-ci.sh     # start again from a new debootstrap
#
# FRESH_DIR (default /var/tmp/gpu-cdi-fresh) holds root/ (the chroot) and the logs. apt lists
# inside the chroot are emptied before the first run, as on a never-updated machine. If the
# host sets PIP_CERT (a TLS-intercepting proxy), that CA bundle is copied in and used.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FRESH_DIR=${FRESH_DIR:-/var/tmp/gpu-cdi-fresh}
R=$FRESH_DIR/root
log() { printf '[fresh-ci] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
if [ "${FRESH_RESET:-0}" = 1 ]; then rm -rf "$R"; fi
if [ ! -x "$R/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  mirror=$(bash -c ". '$REPO/tests/e2e/debian-apt.sh'; debian_mirror_uri")
  log "debootstrap bookworm (minbase) from $mirror into $R"
  mkdir -p "$FRESH_DIR"
  debootstrap --variant=minbase bookworm "$R" "$mirror" >"$FRESH_DIR/debootstrap.log" 2>&1
  rm -f "$R"/var/lib/apt/lists/*_dists_* 2>/dev/null || true
fi
cp /etc/resolv.conf "$R/etc/resolv.conf"
extra_env=()  # VAR=value words without spaces
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  mkdir -p "$R/etc/ssl"
  cp "$PIP_CERT" "$R/etc/ssl/host-ca.crt"
  extra_env+=(PIP_CERT=/etc/ssl/host-ca.crt)
fi

log "copying $REPO into $R/work/main"
# keep the chroot's own .venv and .cache between runs (they were made inside it)
mkdir -p "$R/work/main"
find "$R/work/main" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .cache -exec rm -rf {} +
tar -C "$(dirname "$REPO")" \
  --exclude="$(basename "$REPO")/.venv" --exclude="$(basename "$REPO")/.cache" \
  --exclude='*/.mypy_cache' --exclude='*/.ruff_cache' --exclude='*/.pytest_cache' \
  --exclude='*/__pycache__' --exclude='*.egg-info' \
  -cf - "$(basename "$REPO")" | tar -C "$R/work" -xf -
[ "$(basename "$REPO")" = main ] || { cp -a "$R/work/$(basename "$REPO")/." "$R/work/main/" && rm -rf "$R/work/$(basename "$REPO")"; }

[ $# -gt 0 ] || set -- bash .ci/run
log "running in chroot: $*"
# runc needs "/" to be a mount point (it makes it rprivate), hence the self bind mount.
# shellcheck disable=SC2016  # expanded by the inner bash
exec unshare -m --propagation private bash -c '
  set -e
  R=$1 ENVS=$2; shift 2
  mount --bind "$R" "$R"
  mount --rbind /dev "$R/dev"
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount -t tmpfs tmpfs "$R/run"
  mount -t tmpfs tmpfs "$R/tmp"
  # shellcheck disable=SC2086
  exec chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin $ENVS \
    bash -c "cd /work/main && exec \"\$@\"" bash "$@"
' bash "$R" "${extra_env[*]:-}" "$@"
