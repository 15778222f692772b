#!/usr/bin/env python3
"""Where a gateway process's CPU went, from `perf script` output on stdin (call stacks, JIT
code named through the runtime's perf map). Used by scripts/bench (BENCH_PROFILE=1); prints
shares of all samples, never a judgement.

usage: profile-summary.py [--wasmtime] [top]

workerd (the default; V8's --perf-basic-prof map): a sample is put in the first category its
stack matches, in the order of the list below: the wasm's exports (and everything they call),
the shim's command loop, the rest of the shim, V8's garbage collector, then whatever is left
(workerd's own HTTP, streams and promise machinery, and the kernel under them).

wasmtime (`--profile=perfmap`): a sample is put where its leaf is. A leaf in the kernel goes
by the system call or fault above it: memory (page faults, madvise, TLB flushes: fresh
instances), files (the Spin test host's KV store), network, scheduling; a leaf in wasm code by
its module: the gateway's (the module with `edge_gateway` functions) or another of the
composition (the test host, the WASI adapters); anything else is wasmtime and libc
(instantiation, host calls, HTTP).
"""
import collections
import re
import subprocess
import sys

WORKERD = [
    ("wasm: egw_fetch (a request in, up to its first commands)", r"JS:egw_fetch-"),
    ("wasm: egw_resume (an I/O outcome in)", r"JS:egw_resume-"),
    ("wasm: other exports (stream chunks, alloc, cancel)", r"JS:egw_"),
    ("shim: performing commands (fetch, Response, KV, log)", r"JS:[*~+^']*'?(run|perform) shim\.mjs"),
    ("shim: the rest (request head and body, tasks)", r"shim\.mjs"),
    ("V8 garbage collection", r"Heap::|Scavenge|MarkCompact|GCTracer"),
]
WORKERD_REST = "workerd and the kernel (HTTP, streams, promises, I/O)"
WORKERD_WASM = re.compile(r"^JS:(.*)-\d+-(?:turbofan|liftoff)$")

KERNEL = [
    ("kernel: memory (page faults, madvise, TLB flushes)",
     r"^(asm_exc_page_fault|exc_page_fault|__x64_sys_(madvise|mprotect|mmap|munmap|mremap)|flush_tlb_mm_range)$"),
    ("kernel: files (the test host's KV store)",
     r"^__x64_sys_(openat2?|renameat2?|unlinkat|statx|newfstatat|pread64|pwrite64|close|getdents64|fsync"
     r"|fdatasync|ftruncate|lseek)$"),
    ("kernel: network", r"^(__x64_sys_(connect|socket|sendto|recvfrom|sendmsg|recvmsg|read|write|writev|readv"
     r"|accept4?|shutdown|epoll_wait|epoll_ctl|getsockopt|setsockopt)|net_rx_action)$"),
    ("kernel: scheduling (futexes, thread switches)", r"^(__x64_sys_futex|__schedule|schedule|finish_task_switch.*)$"),
]
KERNEL_REST = "kernel: other"
GATEWAY_WASM = "wasm: the gateway"
OTHER_WASM = "wasm: the other modules (test host, WASI adapters)"
WASMTIME_REST = "wasmtime and libc (instantiation, host calls, HTTP)"
WASMTIME_WASM = re.compile(r"^wasm\[(\d+)\]::(?:function\[\d+\](?:::(.*))?|.*)$")

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$")


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
    tidy = lambda text: re.sub(r"::h[0-9a-f]{16}$|\[[0-9a-f]{16}\]", "", legacy(text))
    return {name: tidy(text) for name, text in zip(names, out)}


LEGACY_ESCAPES = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$u20$": " ",
                  "$u7b$": "{", "$u7d$": "}", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "..": "::"}


def legacy(name):
    """A Rust legacy-mangled name c++filt left as it was (wasmtime's perf map cuts long names,
    so their closing `E` is missing): its path segments, unescaped."""
    if not name.startswith("_ZN"):
        return name
    parts, rest = [], name[3:]
    while (m := re.match(r"(\d+)", rest)) and len(rest) > len(m.group(1)):
        n = int(m.group(1))
        segment = rest[len(m.group(1)):len(m.group(1)) + n]
        parts.append(segment[1:] if segment.startswith("_$") else segment)
        rest = rest[len(m.group(1)) + n:]
    text = re.sub(r"::h[0-9a-f]*$", "", "::".join(parts)) or name
    for escaped, plain in LEGACY_ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


def samples(text):
    """Each sample's frames, leaf first, as (symbol, object) pairs."""
    for sample in text.split("\n\n"):
        frames = [m.groups() for m in map(FRAME.match, sample.splitlines()[1:]) if m]
        if frames:
            yield frames


def workerd(stacks):
    """Category shares, and the wasm functions' names at the leaf and anywhere on the stack."""
    shares, own, under = collections.Counter(), collections.Counter(), collections.Counter()
    for frames in stacks:
        symbols = [symbol for symbol, _ in frames]
        stack = "\n".join(symbols)
        shares[next((label for label, pattern in WORKERD if re.search(pattern, stack)), WORKERD_REST)] += 1
        names = [m.group(1) for m in map(WORKERD_WASM.match, symbols) if m]
        if names and WORKERD_WASM.match(symbols[0]):
            own[names[0]] += 1
        for name in set(names):
            under[name] += 1
    return [label for label, _ in WORKERD] + [WORKERD_REST], shares, own, under


def wasmtime(stacks):
    stacks = list(stacks)
    # The gateway's module: the one whose functions are named edge_gateway::…
    modules = collections.Counter()
    for frames in stacks:
        for symbol, _ in frames:
            m = WASMTIME_WASM.match(symbol)
            if m and m.group(2) and "edge_gateway" in m.group(2):
                modules[m.group(1)] += 1
    gateway = modules.most_common(1)[0][0] if modules else None
    shares, own, under = collections.Counter(), collections.Counter(), collections.Counter()
    for frames in stacks:
        leaf, where = frames[0]
        wasm = WASMTIME_WASM.match(leaf)
        if where == "[kernel.kallsyms]":
            kernel = [symbol for symbol, obj in frames if obj == "[kernel.kallsyms]"]
            label = next((label for label, pattern in KERNEL if any(re.match(pattern, s) for s in kernel)),
                         KERNEL_REST)
        else:
            label = WASMTIME_REST if not wasm else GATEWAY_WASM if wasm.group(1) == gateway else OTHER_WASM
        shares[label] += 1
        names = [m.group(2) for m in map(WASMTIME_WASM.match, (s for s, _ in frames))
                 if m and m.group(1) == gateway and m.group(2)]
        if label == GATEWAY_WASM and wasm.group(2):
            own[wasm.group(2)] += 1
        for name in set(names):
            under[name] += 1
    labels = [label for label, _ in KERNEL] + [KERNEL_REST, GATEWAY_WASM, OTHER_WASM, WASMTIME_REST]
    return labels, shares, own, under


def main():
    args = sys.argv[1:]
    runtime = wasmtime if "--wasmtime" in args else workerd
    args = [a for a in args if a != "--wasmtime"]
    top = int(args[0]) if args else 15
    labels, shares, own, under = runtime(samples(sys.stdin.read()))
    total = sum(shares.values())
    if total == 0:
        print("no samples")
        return
    print(f"{total} samples")
    for label in labels:
        print(f"  {100 * shares[label] / total:5.1f}%  {label}")
    readable = demangle_all(set(own) | set(under))
    print(f"wasm functions, own time (top {top}; all of them: {100 * sum(own.values()) / total:.1f}%):")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.2f}%  {readable[name][:110]}")
    print(f"wasm functions, with what they call (top {top}):")
    for name, n in under.most_common(top):
        print(f"  {100 * n / total:5.2f}%  {readable[name][:110]}")


if __name__ == "__main__":
    main()
