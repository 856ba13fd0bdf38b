#!/usr/bin/env python3
"""Browse _socketplane._tcp.local. with python-zeroconf, an mDNS implementation
independent of ours, and print what it resolves as one JSON list.

usage: zeroconf_browse.py VERSION SECONDS [EXPECTED_COUNT]
VERSION is the zeroconf version the tests pin; another one is an error
(exit 4), so a test never passes against an implementation nobody chose.
Stops after SECONDS, or earlier once EXPECTED_COUNT services are resolved.
"""

import json
import sys
import time

try:
    import zeroconf
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf, IPVersion
except ImportError:
    sys.stderr.write("python module 'zeroconf' is missing: pip install zeroconf==%s\n" % sys.argv[1])
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
    pinned = sys.argv[1]
    if zeroconf.__version__ != pinned:
        sys.stderr.write(
            "python zeroconf %s is installed, the tests pin %s: pip install zeroconf==%s\n"
            % (zeroconf.__version__, pinned, pinned)
        )
        sys.exit(4)
    seconds = float(sys.argv[2])
    expected = int(sys.argv[3]) if len(sys.argv) > 3 else None
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
