#!/usr/bin/env python3
"""Where a workerd process's CPU went, from `perf script` output on stdin (call stacks, the
worker's JIT code named through V8's --perf-basic-prof map). Used by scripts/bench
(BENCH_PROFILE=1); prints shares of all samples, never a judgement.

A sample is put in the first category its stack matches, from the leaf's side of the list
below: the wasm's exports (and everything they call), the shim's command loop, the rest of
the shim, V8's garbage collector, then whatever is left (workerd's own HTTP, streams and
promise machinery, and the kernel under them).
"""
import collections
import re
import subprocess
import sys

CATEGORIES = [
    ("wasm: egw_fetch (a request in, up to its first commands)", r"JS:egw_fetch-"),
    ("wasm: egw_resume (an I/O outcome in)", r"JS:egw_resume-"),
    ("wasm: other exports (stream chunks, alloc, cancel)", r"JS:egw_"),
    ("shim: performing commands (fetch, Response, KV, log)", r"JS:[*~+^']*'?(run|perform) shim\.mjs"),
    ("shim: the rest (request head and body, tasks)", r"shim\.mjs"),
    ("V8 garbage collection", r"Heap::|Scavenge|MarkCompact|GCTracer"),
]
REST = "workerd and the kernel (HTTP, streams, promises, I/O)"
FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$")
WASM_NAME = re.compile(r"^JS:(.*)-\d+-(?:turbofan|liftoff)$")


def demangle_all(names):
    """Readable names: c++filt (binutils: Rust's legacy and v0 manglings) when there is one,
    without hashes and crate disambiguators; the mangled name otherwise."""
    names = list(names)
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = names
    if len(out) != len(names):
        out = names
    tidy = lambda text: re.sub(r"::h[0-9a-f]{16}$|\[[0-9a-f]{16}\]", "", text)
    return {name: tidy(text) for name, text in zip(names, out)}


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    total = 0
    shares = collections.Counter()
    own = collections.Counter()  # wasm function at the leaf
    under = collections.Counter()  # wasm function anywhere on the stack
    for sample in sys.stdin.read().split("\n\n"):
        frames = []
        for line in sample.splitlines()[1:]:
            m = FRAME.match(line)
            if m:
                frames.append(m.group(1))
        if not frames:
            continue
        total += 1
        stack = "\n".join(frames)
        shares[next((label for label, pattern in CATEGORIES if re.search(pattern, stack)), REST)] += 1
        names = [WASM_NAME.match(f) for f in frames]
        names = [m.group(1) for m in names if m]
        if names and WASM_NAME.match(frames[0]):
            own[names[0]] += 1
        for name in set(names):
            under[name] += 1
    if total == 0:
        print("no samples")
        return
    print(f"{total} samples")
    for label in [label for label, _ in CATEGORIES] + [REST]:
        print(f"  {100 * shares[label] / total:5.1f}%  {label}")
    readable = demangle_all(set(own) | set(under))
    print(f"wasm functions, own time (top {top}; all wasm: {100 * sum(own.values()) / total:.1f}%):")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.2f}%  {readable[name][:110]}")
    print(f"wasm functions, with what they call (top {top}):")
    for name, n in under.most_common(top):
        print(f"  {100 * n / total:5.2f}%  {readable[name][:110]}")


if __name__ == "__main__":
    main()
