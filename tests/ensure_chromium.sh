#!/usr/bin/env bash
# `make test` runs this before pytest: it installs Debian's chromium for the browser tests
# (tests/test_ui_browser.py) where chromium is missing and apt-get can install it (as root, or with
# sudo without a password). It never fails: without chromium those tests skip, saying why.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
note() { echo "note: $* - the browser UI tests (tests/test_ui_browser.py) will skip"; exit 0; }
command -v apt-get >/dev/null 2>&1 || note "chromium is not installed and there is no apt-get"
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  note "chromium is not installed and apt-get needs root (no passwordless sudo)"
fi
log=$(mktemp -t defectops-chromium-install.XXXXXX.log 2>/dev/null || echo /tmp/defectops-chromium-install.log)
echo "installing chromium with apt-get for the browser UI tests (log: $log)..."
if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1 &&
   "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>"$log" 2>&1 &&
   command -v chromium >/dev/null 2>&1; then
  echo "chromium installed: $(chromium --version 2>/dev/null)"
else
  note "installing chromium failed (see $log)"
fi
exit 0
