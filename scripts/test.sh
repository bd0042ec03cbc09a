#!/usr/bin/env bash
# Runs mxguard's whole test suite on a fresh Debian machine: installs the
# system packages the tests use (swaks drives the server as an outside
# client; Python's smtplib does too), then the Rust tests of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v swaks >/dev/null 2>&1 || need_pkgs+=(swaks)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

cargo test --workspace --all-targets
