#!/usr/bin/env python3
"""Prints a Wasm module's interface: imports with their signatures, exports,
memories, the start function and the proxy-wasm ABI marker.

    python3 tests/as-filters/wasm-interface.py target/as-filters/*.wasm

Standard library only (no wabt needed).
"""
import sys

KINDS = {0: "func", 1: "table", 2: "memory", 3: "global"}
TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
         0x70: "funcref", 0x6F: "externref"}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result

    def name(self):
        n = self.uleb()
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def limits(self):
        flags = self.byte()
        lo = self.uleb()
        hi = self.uleb() if flags & 1 else None
        return lo, hi


def interface(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\0asm\1\0\0\0":
        raise SystemExit(f"{path}: not a Wasm 1.0 module")
    r = Reader(data)
    r.pos = 8
    types, imports, exports, memories, start = [], [], [], [], None
    func_types, imported_funcs = [], 0
    while r.pos < len(data):
        section, size = r.byte(), r.uleb()
        end = r.pos + size
        if section == 1:  # types
            for _ in range(r.uleb()):
                r.byte()  # 0x60
                params = [TYPES.get(r.byte(), "?") for _ in range(r.uleb())]
                results = [TYPES.get(r.byte(), "?") for _ in range(r.uleb())]
                types.append((params, results))
        elif section == 2:  # imports
            for _ in range(r.uleb()):
                module, field, kind = r.name(), r.name(), r.byte()
                if kind == 0:
                    t = types[r.uleb()]
                    imported_funcs += 1
                    imports.append(f"{module}.{field}({', '.join(t[0])})"
                                   f" -> {', '.join(t[1]) or '()'}")
                elif kind == 1:
                    r.byte()
                    r.limits()
                    imports.append(f"{module}.{field} (table)")
                elif kind == 2:
                    lo, hi = r.limits()
                    imports.append(f"{module}.{field} (memory {lo}..{hi})")
                else:
                    r.byte()
                    r.byte()
                    imports.append(f"{module}.{field} (global)")
        elif section == 3:  # function declarations
            func_types = [r.uleb() for _ in range(r.uleb())]
        elif section == 5:  # memories
            memories = [r.limits() for _ in range(r.uleb())]
        elif section == 7:  # exports
            for _ in range(r.uleb()):
                field, kind, index = r.name(), r.byte(), r.uleb()
                exports.append((field, KINDS.get(kind, "?"), index))
        elif section == 8:
            start = r.uleb()
        r.pos = end
    print(f"== {path} ({len(data)} bytes)")
    abi = [e[0] for e in exports if e[0].startswith("proxy_abi_version_")]
    print(f"ABI marker: {', '.join(abi) or 'none'}")
    print(f"start section: {'function ' + str(start) if start is not None else 'none'}")
    for name in ("_start", "_initialize", "malloc", "free", "proxy_on_memory_allocate"):
        print(f"exports {name}: {'yes' if any(e[0] == name for e in exports) else 'no'}")
    for lo, hi in memories:
        print(f"memory: {lo} page(s) initial, maximum {hi if hi is not None else 'none'}")
    print(f"imports ({len(imports)}):")
    for i in imports:
        print(f"  {i}")
    print(f"exports ({len(exports)}):")
    for field, kind, index in exports:
        sig = ""
        if kind == "func" and index >= imported_funcs:
            params, results = types[func_types[index - imported_funcs]]
            sig = f"({', '.join(params)}) -> {', '.join(results) or '()'}"
        print(f"  {field} [{kind} {index}] {sig}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        interface(p)
