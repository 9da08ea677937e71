#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if missing. Idempotent.
#   chromium              - the real browser the drawing-page tests drive (via Playwright)
#   dataset-fashion-mnist - Fashion-MNIST under /usr/share/datasets/fashion-mnist
#   postgresql            - a throwaway server for the tuning tests (initdb, pg_ctl)
#   fonts-dejavu-core     - typeset letters for the not-a-digit checks (digitlab.ood)
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null 2>&1 \
  || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: apt-get not found; install ${need[*]} yourself (tests needing them skip)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "system-deps: not root and no sudo; install ${need[*]} yourself" >&2
    exit 0
  fi
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
