#!/usr/bin/env python3
"""Fails if any crate under crates/ has an import cycle between its top-level
modules. An edge A -> B is a `crate::B` path in module A's code (comments
and `#[cfg(test)]` tails left out). Usage: scripts/check-module-cycles.py"""
import os
import re
import sys


def graph(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3]
            top = rel.split("/")[0]
            if top in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            text = re.sub(r"#\[cfg\(test\)\][\s\S]*", "", text)
            text = re.sub(r"//.*", "", text)
            deps = set(re.findall(r"crate::(\w+)", text)) - {top}
            mods.setdefault(top, set()).update(deps)
    return mods


def cycles(g):
    found, state = [], {}

    def dfs(n, path):
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                found.append(path[path.index(m):] + [m])
            elif m in g and not state.get(m):
                dfs(m, path + [m])
        state[n] = 2

    for n in sorted(g):
        if not state.get(n):
            dfs(n, [n])
    return found


def main():
    bad = 0
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        g = graph(src)
        c = cycles(g)
        edges = sum(len(v) for v in g.values())
        print(f"{crate}: {len(g)} modules, {edges} edges, cycles: {c or 'none'}")
        bad += len(c)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
