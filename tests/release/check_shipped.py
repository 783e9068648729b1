#!/usr/bin/env python3
"""check_shipped.py DIR...: the shipped files keep to DESIGN.md's "The agent travels".

Every ELF file under DIR (the agent and the CLI, as a wheel, a .deb or `make install` lay them
out) must:
  - need nothing but the C library's own parts and libgcc_s (which glibc needs for thread exit):
    no libstdc++, OpenSSL, libdw, libelf, libedit or zlib of the machine it lands on;
  - ask for no glibc symbol version newer than the floor (2.31, Debian 11) and no versioned
    symbol of libstdc++ or OpenSSL, which would mean one of them is not linked in after all;
  - be stripped, and at most 10 MB.
Prints one line per file (size, glibc floor, what it needs) and exits 1 naming what is wrong."""
import os
import re
import subprocess
import sys

GLIBC_FLOOR = (2, 31)
GCC_CEILING = (7, 0, 0)  # libgcc_s.so.1's versions: every system with glibc 2.31 has GCC 7's or newer
MAX_BYTES = 10 * 1024 * 1024
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
                  "ld-linux-x86-64.so.2", "libgcc_s.so.1"}


def version(text):
    return tuple(int(x) for x in text.split("."))


def elf_files(roots):
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                if name.endswith(".debug"):  # the split debug information (INSTALL_DEBUG=1): not loaded
                    continue
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        yield path


def check(path):
    problems = []
    dynamic = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    for lib in needed:
        if lib not in ALLOWED_NEEDED:
            problems.append("needs %s" % lib)
    symbols = subprocess.run(["objdump", "-T", path], capture_output=True, text=True, check=True).stdout
    glibc = [version(v) for v in re.findall(r"\bGLIBC_([0-9.]+)\b", symbols)]
    floor = max(glibc, default=(2, 2, 5))
    for v, name in re.findall(r"\bGLIBC_([0-9.]+)\)?\s+(\S+)$", symbols, re.M):
        if version(v) > GLIBC_FLOOR:
            problems.append("%s needs GLIBC_%s" % (name, v))
    for v in set(re.findall(r"\bGCC_([0-9.]+)\b", symbols)):
        if version(v) > GCC_CEILING:
            problems.append("needs GCC_%s of libgcc_s" % v)
    for lib in ("GLIBCXX", "CXXABI", "OPENSSL", "ELFUTILS", "ZLIB"):
        found = sorted(set(re.findall(r"\b(%s_[0-9.]+)\b" % lib, symbols)))
        if found:
            problems.append("binds to %s" % ", ".join(found))
    sections = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    if re.search(r"\.debug_info\b", sections) or re.search(r"\]\s+\.symtab\b", sections):
        problems.append("is not stripped")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        problems.append("is %.1f MB, over %d MB" % (size / 2**20, MAX_BYTES // 2**20))
    print("%-60s %5.1f MB  glibc %-6s needs %s" % (path, size / 2**20, ".".join(map(str, floor)),
                                                   " ".join(needed) or "nothing"))
    return ["%s %s" % (path, p) for p in problems]


def main():
    roots = sys.argv[1:]
    if not roots:
        sys.exit(__doc__)
    files = list(elf_files(roots))
    if not files:
        sys.exit("check_shipped: no ELF file under %s" % " ".join(roots))
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print("check_shipped: " + p, file=sys.stderr)
    print("check_shipped: %d files, %s" % (len(files), "%d problems" % len(problems) if problems else
                                           "each needs glibc %s or older and the C library alone" %
                                           ".".join(map(str, GLIBC_FLOOR))))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
