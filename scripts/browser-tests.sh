#!/usr/bin/env bash
# The staff console's browser tests (tests/browser): Playwright for Python from PyPI driving
# Debian's chromium with a Japanese font. Installs what they need; fails, never skips, when
# the browser cannot start. Argument: the kokuho-ledger binary to test.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/kokuho-ledger}"
[ -x "$bin" ] || { echo "browser tests: $bin is not built" >&2; exit 1; }

if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi "IPAGothic"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null
  fi
fi
command -v chromium >/dev/null || { echo "browser tests: Debian's chromium is not installed (apt-get install chromium fonts-ipafont-gothic)" >&2; exit 1; }

venv="${CARGO_TARGET_DIR:-target}/venv-browser"
if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/browser/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/browser/requirements.txt
  cp tests/browser/requirements.txt "$venv/requirements.txt"
fi

KOKUHO_BIN="$(realpath "$bin")" KOKUHO_CHROMIUM="$(command -v chromium)" \
  "$venv/bin/pytest" -q -p no:cacheprovider tests/browser "${@:2}"
