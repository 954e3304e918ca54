#!/usr/bin/env bash
# Installs every system program the tests drive (Chromium, nginx, redis-server...) from Debian's
# packages: `npm run test:deps` on a developer's machine, and `.ci/run` in CI, so CI skips no
# test. The list is the `debianPackage:` lines of test/fixtures/system-programs.ts, the table
# requireProgram() looks programs up in; add a program there and it is installed here too.
# Needs root (as on this project's machines and CI) or sudo. Packages already there are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(sed -n "s/^ *debianPackage: '\([a-z0-9.+-]*\)'.*/\1/p" test/fixtures/system-programs.ts)
if [ "${#packages[@]}" -eq 0 ]; then
  echo "install-test-deps: no debianPackage entries found in test/fixtures/system-programs.ts" >&2
  exit 1
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-test-deps: already installed: ${packages[*]}"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: run as root or install sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

# nginx and redis-server start system services on install; the tests run their own instances
# on free ports, so keep the packages' services from starting (Debian's policy-rc.d, exit 101
# "action forbidden"), unless the machine already has a policy of its own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  $sudo sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
  trap '$sudo rm -f "$policy"' EXIT
fi

echo "install-test-deps: installing ${missing[*]}"
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
