#!/usr/bin/env bash
# Runs mxguard's whole test suite on a fresh Debian machine: installs the
# system packages the tests use (swaks and openssl s_client drive the
# server as outside clients; Python's smtplib and poplib do too;
# redis-server backs the Redis state store's tests), then the Rust tests
# of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v swaks >/dev/null 2>&1 || need_pkgs+=(swaks)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# mxguard-store's Redis backend tests start redis-server processes of their own.
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
# tests/rspamd.rs checks the rspamd client against a real rspamd it starts.
command -v rspamd >/dev/null 2>&1 || need_pkgs+=(rspamd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The outbound tests receive mail with tests/sinks/sink.py, built on the
# Python package aiosmtpd (PyPI), run by the `python3` found in PATH (or
# $PYTHON): install it for that interpreter when it cannot import it.
PY="${PYTHON:-python3}"
if ! "$PY" -c "import aiosmtpd" >/dev/null 2>&1; then
  echo "installing: aiosmtpd (for $PY)"
  "$PY" -m pip install --quiet aiosmtpd \
    || "$PY" -m pip install --quiet --break-system-packages aiosmtpd \
    || {
      SUDO=""
      [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-aiosmtpd >/dev/null
    }
  "$PY" -c "import aiosmtpd" || { echo "aiosmtpd is still missing for $PY" >&2; exit 1; }
fi

cargo test --workspace --all-targets
