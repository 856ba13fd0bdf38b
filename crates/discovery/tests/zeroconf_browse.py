#!/usr/bin/env python3
"""Browse _socketplane._tcp.local. with python-zeroconf, an mDNS implementation
independent of ours, and print what it resolves as one JSON list.

usage: zeroconf_browse.py SECONDS [EXPECTED_COUNT]
Stops after SECONDS, or earlier once EXPECTED_COUNT services are resolved.
"""

import json
import sys
import time

try:
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf, IPVersion
except ImportError:
    sys.stderr.write("python module 'zeroconf' is missing: pip install zeroconf\n")
    sys.exit(3)

SERVICE_TYPE = "_socketplane._tcp.local."


class Listener(ServiceListener):
    def __init__(self):
        self.names = set()

    def add_service(self, zc, type_, name):
        self.names.add(name)

    def update_service(self, zc, type_, name):
        self.names.add(name)

    def remove_service(self, zc, type_, name):
        self.names.discard(name)


def main():
    seconds = float(sys.argv[1])
    expected = int(sys.argv[2]) if len(sys.argv) > 2 else None
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    listener = Listener()
    ServiceBrowser(zc, SERVICE_TYPE, listener)
    deadline = time.monotonic() + seconds
    found = {}
    try:
        while time.monotonic() < deadline:
            for name in sorted(listener.names):
                if name in found:
                    continue
                info = zc.get_service_info(SERVICE_TYPE, name, timeout=1000)
                if info is None:
                    continue
                props = {
                    k.decode(): (v.decode() if v is not None else None)
                    for k, v in info.properties.items()
                }
                found[name] = {
                    "name": name,
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "properties": props,
                }
            if expected is not None and len(found) >= expected:
                break
            time.sleep(0.2)
    finally:
        zc.close()
    print(json.dumps(sorted(found.values(), key=lambda s: s["name"])))


if __name__ == "__main__":
    main()
