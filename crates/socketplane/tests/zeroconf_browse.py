"""Browse an mDNS service type with python-zeroconf (an implementation
independent of ours) and print what was found as JSON.

usage: zeroconf_browse.py SERVICE_TYPE SECONDS
"""
import json
import socket
import sys
import time

from zeroconf import ServiceBrowser, Zeroconf


def main() -> None:
    service_type, seconds = sys.argv[1], float(sys.argv[2])
    zc = Zeroconf()
    names = set()

    class Listener:
        def add_service(self, zc, type_, name):
            names.add(name)

        def update_service(self, zc, type_, name):
            names.add(name)

        def remove_service(self, zc, type_, name):
            pass

    ServiceBrowser(zc, service_type, Listener())
    time.sleep(seconds)
    found = []
    for name in sorted(names):
        info = zc.get_service_info(service_type, name, timeout=2000)
        if info is None:
            continue
        txt = {k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()}
        found.append(
            {
                "name": name,
                "port": info.port,
                "addresses": [socket.inet_ntoa(a) for a in info.addresses if len(a) == 4],
                "txt": txt,
            }
        )
    zc.close()
    print(json.dumps(found))


if __name__ == "__main__":
    main()
