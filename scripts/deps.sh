#!/usr/bin/env bash
# Installs what witnz's tests and local runs need on a fresh Debian machine
# (root, Go preinstalled): PostgreSQL server binaries, redis-server, and the
# MinIO server the anchor tests use (scripts/minio.sh, built once and cached).
#
# Idempotent and fast when everything is present: it only checks files. When
# it installs a package it stops and disables the service Debian starts with
# it, because tests start their own servers on free ports (libs/testenv) and
# the packaged ones would only hold 5432/6379.
#
# Works unattended (CI=true, no stdin). Usage: scripts/deps.sh  (or make deps)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

APT_LOG="$(mktemp -t witnz-deps-apt.XXXXXX)"
trap 'rm -f "$APT_LOG"' EXIT

# apt runs with its output in $APT_LOG; on failure the log is shown.
apt_run() {
  if ! apt-get -y -q -o DPkg::Lock::Timeout=300 \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "$@" </dev/null >>"$APT_LOG" 2>&1; then
    echo "apt-get $*: failed; its output:" >&2
    tail -n 50 "$APT_LOG" >&2
    exit 1
  fi
}

APT_UPDATED=0
apt_install() {
  if [[ $EUID -ne 0 ]]; then
    echo "deps: installing $* needs root; rerun as root (sudo $0)" >&2
    exit 1
  fi
  if [[ $APT_UPDATED -eq 0 ]]; then
    apt_run update
    APT_UPDATED=1
  fi
  apt_run install --no-install-recommends "$@"
}

systemd_running() { [[ -d /run/systemd/system ]]; }

# pg_versions prints the major versions with server binaries, e.g. "15".
pg_versions() {
  local initdb v out=()
  for initdb in /usr/lib/postgresql/*/bin/initdb; do
    [[ -x $initdb ]] || continue
    v="${initdb#/usr/lib/postgresql/}"
    out+=("${v%%/*}")
  done
  [[ ${#out[@]} -gt 0 ]] || return 0
  printf '%s\n' "${out[@]}" | sort -n | paste -sd, - | sed 's/,/, /g'
}

# stop_packaged_postgres stops the clusters the postgresql package created and
# started, and keeps them from starting at boot.
stop_packaged_postgres() {
  if command -v pg_lsclusters >/dev/null 2>&1; then
    local ver name _port status _rest
    while read -r ver name _port status _rest; do
      [[ -n $ver ]] || continue
      if [[ $status == online* ]]; then
        pg_ctlcluster "$ver" "$name" stop || true
      fi
      if [[ -f /etc/postgresql/$ver/$name/start.conf ]]; then
        echo manual >"/etc/postgresql/$ver/$name/start.conf"
      fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
  fi
  if systemd_running; then
    systemctl disable --now postgresql >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/postgresql ]]; then
    service postgresql stop >/dev/null 2>&1 || true
  fi
}

# stop_packaged_redis stops the redis-server instance the package started
# (the one with /etc/redis/redis.conf, port 6379) and disables it.
stop_packaged_redis() {
  if systemd_running; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/redis-server ]]; then
    service redis-server stop >/dev/null 2>&1 || true
    update-rc.d redis-server disable >/dev/null 2>&1 || true
  fi
}

ensure_postgresql() {
  local versions
  versions="$(pg_versions)"
  if [[ -n $versions ]]; then
    echo "postgresql: present ($versions)"
    return
  fi
  echo "postgresql: installing…"
  apt_install postgresql
  stop_packaged_postgres
  versions="$(pg_versions)"
  if [[ -z $versions ]]; then
    echo "postgresql: installed, but no /usr/lib/postgresql/*/bin/initdb appeared" >&2
    exit 1
  fi
  echo "postgresql: installed ($versions)"
}

redis_version() {
  "$1" --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p'
}

find_redis() {
  command -v redis-server 2>/dev/null || { [[ -x /usr/bin/redis-server ]] && echo /usr/bin/redis-server; } || true
}

ensure_redis() {
  local bin
  bin="$(find_redis)"
  if [[ -n $bin ]]; then
    echo "redis-server: present ($(redis_version "$bin"))"
    return
  fi
  echo "redis-server: installing…"
  apt_install redis-server
  stop_packaged_redis
  bin="$(find_redis)"
  if [[ -z $bin ]]; then
    echo "redis-server: installed, but no redis-server binary appeared" >&2
    exit 1
  fi
  echo "redis-server: installed ($(redis_version "$bin"))"
}

ensure_postgresql
ensure_redis
"$(dirname "${BASH_SOURCE[0]}")/minio.sh"
