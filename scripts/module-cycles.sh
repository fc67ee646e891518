#!/usr/bin/env bash
# Import cycles between the top-level modules of a crate's src/ (edges from `crate::<module>`
# paths in a module's files; a `#[cfg(test)]` module at the end of a file is not counted: test
# code may use a higher layer). Prints the edges with --edges, each
# cycle found, and exits 1 when there is one.
# Usage: scripts/module-cycles.sh [--edges] [SRC_DIR]   (default: controller/src)
set -euo pipefail
edges=0
if [[ "${1:-}" == "--edges" ]]; then edges=1; shift; fi
src="${1:-controller/src}"
python3 - "$src" "$edges" <<'PY'
import os, re, sys
src, show = sys.argv[1], sys.argv[2] == "1"
mods = {}
for f in sorted(os.listdir(src)):
    p = os.path.join(src, f)
    if f.endswith(".rs") and f not in ("lib.rs", "main.rs"):
        mods[f[:-3]] = [p]
    elif os.path.isdir(p):
        mods[f] = [os.path.join(r, x) for r, _, fs in os.walk(p) for x in fs if x.endswith(".rs")]
graph = {m: set() for m in mods}
for m, files in mods.items():
    for p in files:
        text = open(p).read()
        cut = text.find("\n#[cfg(test)]\nmod tests")
        if cut >= 0:
            text = text[:cut]
        text = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
        # `crate::x`, and `crate::{x, y::z}` groups
        for g in re.findall(r"crate::\{([^}]*)\}", text):
            for name in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", g):
                if name in mods and name != m:
                    graph[m].add(name)
        for name in re.findall(r"crate::([a-z_][a-z0-9_]*)", text):
            if name in mods and name != m:
                graph[m].add(name)
if show:
    for m in sorted(graph):
        for d in sorted(graph[m]):
            print(f"{m} -> {d}")
# strongly connected components (Tarjan)
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index: visit(v)
for c in sccs:
    print("cycle among:", " ".join(c))
print(f"{src}: {len(graph)} modules, {sum(len(s) for s in graph.values())} edges, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
PY
