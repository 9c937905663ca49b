#!/usr/bin/env bash
# Make this machine ready to run outbound and its tests: system tools, services, virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v stunnel4 >/dev/null 2>&1 || need_apt+=(stunnel4)
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq)
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio kamailio-tls-modules)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer before it is installed
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # Debian's dnsmasq may start its own daemon on port 53; tests run their own on free ports.
    if [ -s /run/dnsmasq/dnsmasq.pid ]; then kill "$(cat /run/dnsmasq/dnsmasq.pid)" 2>/dev/null || true; fi
fi

bash scripts/services.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev,demo]'
