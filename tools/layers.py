#!/usr/bin/env python3
"""Checks the runtime's layering (docs/ARCHITECTURE.md, "Layers").

A module is a directory under runtime/ (top-level files runtime/*.c are
"runtime-top:<name>") or schema/.  Prints the include graph, then fails
(exit 1) if a module includes one at its own rank or above, or if the graph
has a cycle (strongly connected components of more than one module).
Run from the repository root, or pass it as the first argument.
"""
import collections
import glob
import os
import re
import sys

RANK = {
    "platform": 0, "error": 1, "fiber": 2,
    "schema": 2.5,  # a leaf beside mem: public headers only
    "mem": 3, "sched": 4, "actor": 5, "reactor": 6, "task": 7, "rpc": 8,
}
TOP = 9  # runtime/*.c: may include anything below, and each other


def mod(f):
    p = f.split("/")
    if p[0] == "runtime" and len(p) > 2:
        return p[1]
    if p[0] == "schema":
        return "schema"
    return "runtime-top:" + p[1].rsplit(".", 1)[0]


def rank(m):
    return TOP if m.startswith("runtime-top:") else RANK.get(m)


def main():
    os.chdir(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    files = glob.glob("runtime/**/*.[ch]", recursive=True) + glob.glob("schema/*.[ch]")
    edges = collections.defaultdict(set)
    bad = []
    for f in sorted(files):
        for line in open(f):
            m = re.match(r'#include "(.*)"', line)
            if m and os.path.exists(m.group(1)):
                a, b = mod(f), mod(m.group(1))
                if a == b:
                    continue
                edges[a].add(b)
                ra, rb = rank(a), rank(b)
                if ra is None or rb is None:
                    bad.append(f"{f}: module {a if ra is None else b} has no rank")
                elif rb >= ra and not (ra == TOP and rb == TOP):
                    bad.append(f"{f} includes {m.group(1)}: {a} may not include {b}")
    for a in sorted(edges):
        print(a, "->", sorted(edges[a]))
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(sorted(comp))

    for v in sorted(set(edges) | {b for s in edges.values() for b in s}):
        if v not in index:
            visit(v)
    cycles = [c for c in sccs if len(c) > 1]
    print("cycles:", cycles if cycles else "none")
    for b in bad:
        print("layering:", b)
    return 1 if cycles or bad else 0


if __name__ == "__main__":
    sys.exit(main())
