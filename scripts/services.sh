#!/usr/bin/env bash
# services.sh — install (if missing) and start the services dinp depends on:
# MariaDB and Redis on 127.0.0.1, a MySQL account for dinp, Docker, and the
# host packages the builder needs.
# Sourced by up.sh and test.sh; safe to run again and again.
set -euo pipefail

DINP_MYSQL_USER=${DINP_MYSQL_USER:-dinp}
DINP_MYSQL_PASSWORD=${DINP_MYSQL_PASSWORD:-dinp}

log() { printf '==> %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# free_port VAR sets VAR to a free 127.0.0.1 port below the ephemeral range
# (a kernel-chosen port could be taken by an outgoing connection before the
# caller binds it), distinct from every port it gave before in this shell.
_free_ports=" "
free_port() {
  local _fp
  while :; do
    _fp=$((20000 + RANDOM % 12000))
    case $_free_ports in *" $_fp "*) continue ;; esac
    python3 -c "import socket; socket.socket().bind(('127.0.0.1', $_fp))" 2>/dev/null && break
  done
  _free_ports="$_free_ports$_fp "
  printf -v "$1" '%s' "$_fp"
}

wait_for() { # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# nginx_conf DIR WORKERS SERVER-BLOCKS writes DIR/nginx.conf for an nginx
# run in the foreground by a benchmark (nginx -p DIR -c DIR/nginx.conf).
nginx_conf() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<EOF
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  $3
}
EOF
}

start_mariadb() {
  apt_install mariadb-server mariadb-client
  if ! mysqladmin --protocol=socket ping >/dev/null 2>&1; then
    log "starting mariadb"
    if command -v service >/dev/null && [ -x /etc/init.d/mariadb ]; then
      service mariadb start >/dev/null 2>&1 || true
    fi
    if ! wait_for 20 mysqladmin --protocol=socket ping; then
      # No init system: run the server directly.
      mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
      nohup mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &
      wait_for 60 mysqladmin --protocol=socket ping || { log "mariadb did not start"; return 1; }
    fi
  fi
  mysql --protocol=socket -uroot <<SQL
CREATE USER IF NOT EXISTS '${DINP_MYSQL_USER}'@'127.0.0.1' IDENTIFIED BY '${DINP_MYSQL_PASSWORD}';
CREATE USER IF NOT EXISTS '${DINP_MYSQL_USER}'@'localhost' IDENTIFIED BY '${DINP_MYSQL_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '${DINP_MYSQL_USER}'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '${DINP_MYSQL_USER}'@'localhost';
CREATE DATABASE IF NOT EXISTS dinp CHARACTER SET utf8mb4;
SQL
}

# Redis keeps app logs and log cursors, which are user data: it runs with an
# append-only file (fsync every second), so a restart loses at most a second.
# redis-sentinel is for high availability (see README) and the fault tests.
DINP_REDIS_DIR=${DINP_REDIS_DIR:-/var/lib/dinp-redis}
start_redis() {
  apt_install redis-server redis-tools redis-sentinel
  if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    log "starting redis (append-only file in $DINP_REDIS_DIR)"
    mkdir -p "$DINP_REDIS_DIR"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' \
      --appendonly yes --appendfsync everysec --dir "$DINP_REDIS_DIR" \
      --logfile /tmp/dinp-redis.log >/dev/null
    wait_for 20 redis-cli -h 127.0.0.1 ping || { log "redis did not start"; return 1; }
  fi
}

check_docker() {
  # The agent's packet filter (app containers kept off the node) needs it.
  command -v iptables-restore >/dev/null || apt_install iptables
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null; then
    apt_install docker.io
  fi
  log "starting docker"
  (service docker start >/dev/null 2>&1) || (nohup dockerd >/tmp/dinp-dockerd.log 2>&1 &)
  wait_for 60 docker info || { log "docker engine is not answering"; return 1; }
}

# Host packages the builder takes files from: the static stack copies a
# statically linked /bin/busybox into its base image, and stack images get
# the host's CA bundle. mmdebstrap builds the Debian-based stacks (debian,
# python, node, java) from the machine's apt sources; pip installs a python
# app's wheels offline at build time.
builder_host_deps() {
  apt_install ca-certificates mmdebstrap python3-pip
  if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
    apt_install busybox-static
  fi
}

start_services() {
  builder_host_deps
  start_mariadb
  start_redis
  check_docker
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  start_services
fi
