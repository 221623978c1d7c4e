#!/usr/bin/env bash
# Fetch Debian trixie packages on a bookworm machine WITHOUT touching the system's apt sources.
#
#   trixie-apt.sh lists                    # make sure trixie package lists exist (apt-get update once)
#   trixie-apt.sh update                   # refresh the trixie package lists
#   trixie-apt.sh download DIR PKG...      # .deb files into DIR (PKG may be name=version)
#   trixie-apt.sh unpack PREFIX PKG...     # download (cached) + `dpkg -x` into PREFIX
#   trixie-apt.sh version PKG              # candidate version in trixie
#   trixie-apt.sh opts                     # the apt-get options, one per line
#
# Or source it and call trixie_download / trixie_unpack / trixie_version / trixie_apt.
#
# All apt state (sources.list, lists, archive cache) lives in $TRIXIE_DIR
# (default /var/cache/gpu-cdi/trixie). sources.list is built from the mirror URI this system
# already uses for bookworm, so no host name is hard-coded and a local mirror keeps working.
# `unpack` records what it unpacked in PREFIX/.trixie-packages (name version per line) and is a
# no-op when that record already lists the requested packages.
# Nothing is installed with dpkg -i: packages are only extracted, so the system stays bookworm.

TRIXIE_DIR=${TRIXIE_DIR:-/var/cache/gpu-cdi/trixie}
TRIXIE_KEYRING=${TRIXIE_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

_tx_log() { printf '[trixie-apt] %s\n' "$*" >&2; }
_tx_die() { printf '[trixie-apt] ERROR: %s\n' "$*" >&2; return 1; }

trixie_opts() {
  printf '%s\n' \
    -o "Dir::Etc::SourceList=$TRIXIE_DIR/sources.list" \
    -o "Dir::Etc::SourceParts=/dev/null" \
    -o "Dir::Etc::Preferences=/dev/null" \
    -o "Dir::Etc::PreferencesParts=/dev/null" \
    -o "Dir::State::Lists=$TRIXIE_DIR/lists" \
    -o "Dir::State::Status=$TRIXIE_DIR/status" \
    -o "Dir::Cache=$TRIXIE_DIR/cache" \
    -o "APT::Sandbox::User=root" \
    -o "Acquire::Retries=3"
}

trixie_apt() {
  local opts
  mapfile -t opts < <(trixie_opts)
  apt-get "${opts[@]}" "$@"
}

# The Debian mirror URI this machine uses for bookworm (deb822 .sources or one-line format).
_tx_mirror_uri() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # A stanza whose Suites include "bookworm" (not -security) and whose URI is not a security host.
    uri=$(awk '
      BEGIN { RS=""; FS="\n" }
      {
        u=""; s=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); u=$i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); s=" " $i " " }
        }
        if (s ~ / bookworm / && u !~ /security/) { split(u, a, " "); print a[1]; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                           if ($(i+1)=="bookworm" && $i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  echo "http://deb.debian.org/debian"
}

trixie_update() {
  mkdir -p "$TRIXIE_DIR/lists/partial" "$TRIXIE_DIR/cache/archives/partial" || return 1
  touch "$TRIXIE_DIR/status"
  if [ ! -s "$TRIXIE_DIR/sources.list" ]; then
    [ -f "$TRIXIE_KEYRING" ] || _tx_die "missing $TRIXIE_KEYRING (apt-get install debian-archive-keyring)" || return 1
    local uri
    uri=$(_tx_mirror_uri)
    echo "deb [signed-by=$TRIXIE_KEYRING] $uri trixie main" >"$TRIXIE_DIR/sources.list"
    _tx_log "wrote $TRIXIE_DIR/sources.list (mirror $uri)"
  fi
  _tx_log "apt-get update (trixie lists in $TRIXIE_DIR/lists)"
  trixie_apt update -qq || _tx_die "apt-get update for trixie failed (sources: $(cat "$TRIXIE_DIR/sources.list"))"
}

trixie_lists() {
  if compgen -G "$TRIXIE_DIR/lists/*trixie*Packages*" >/dev/null; then
    return 0
  fi
  trixie_update
}

trixie_version() {
  trixie_lists || return 1
  trixie_apt -qq --print-uris download "$1" 2>/dev/null | awk '{print $2}' | head -n1 \
    | sed -E 's/^[^_]+_([^_]+)_[^_]+\.deb$/\1/; s/%3a/:/g'
}

# trixie_download DIR PKG...: .deb files into DIR. Retries once after refreshing the lists,
# because stale lists point at files the mirror no longer has.
trixie_download() {
  local dir=$1; shift
  [ $# -gt 0 ] || { _tx_die "download: no packages given"; return 1; }
  mkdir -p "$dir" || return 1
  trixie_lists || return 1
  if ! (cd "$dir" && trixie_apt download -qq "$@" >/dev/null 2>&1); then
    _tx_log "download failed; refreshing trixie lists and retrying"
    trixie_update || return 1
    (cd "$dir" && trixie_apt download -qq "$@") || { _tx_die "apt-get download $* (trixie) failed"; return 1; }
  fi
  local p name
  for p in "$@"; do
    name=${p%%=*}
    compgen -G "$dir/${name}_*.deb" >/dev/null || { _tx_die "no ${name}_*.deb in $dir after download"; return 1; }
  done
}

# trixie_unpack PREFIX PKG...: dpkg -x the packages into PREFIX (downloads cached in $TRIXIE_DIR/debs).
trixie_unpack() {
  local prefix=$1; shift
  local record=$prefix/.trixie-packages p name missing=()
  for p in "$@"; do
    name=${p%%=*}
    if [ -f "$record" ] && grep -q "^$name " "$record"; then continue; fi
    missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    _tx_log "already unpacked in $prefix: $*"
    return 0
  fi
  local debs=$TRIXIE_DIR/debs
  trixie_download "$debs" "${missing[@]}" || return 1
  mkdir -p "$prefix" || return 1
  local deb
  for p in "${missing[@]}"; do
    name=${p%%=*}
    # Newest file of that name if several versions were cached over time.
    deb=$(printf '%s\n' "$debs/${name}"_*.deb | sort -V | tail -n1)
    dpkg -x "$deb" "$prefix" || { _tx_die "dpkg -x $deb $prefix failed"; return 1; }
    printf '%s %s\n' "$name" "$(dpkg-deb -f "$deb" Version)" >>"$record"
    _tx_log "unpacked $(basename "$deb") into $prefix"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    lists) trixie_lists ;;
    update) trixie_update ;;
    download) [ $# -ge 2 ] || { echo "usage: $0 download DIR PKG..." >&2; exit 2; }; trixie_download "$@" ;;
    unpack) [ $# -ge 2 ] || { echo "usage: $0 unpack PREFIX PKG..." >&2; exit 2; }; trixie_unpack "$@" ;;
    version) [ $# -eq 1 ] || { echo "usage: $0 version PKG" >&2; exit 2; }; trixie_version "$1" ;;
    opts) trixie_opts ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
fi
