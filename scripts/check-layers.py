#!/usr/bin/env python3
"""Holds the tree to its dependency rule.

Reads the layer table in docs/architecture.md ("| layer | CMake target | depends on |"), the
probing_* libraries each src/<layer>/CMakeLists.txt links, and every #include "<layer>/..." under
src/. Fails, saying what differs, when a layer's CMake dependencies are not the ones the table
gives, or when a file includes a header of a layer its own does not depend on (directly or
through another). Run by the build (target check_layers) and by ctest.

usage: check-layers.py SOURCE_DIR
"""
import os
import re
import sys


def cmake_layers(src):
    """{layer: {"targets": set, "deps": set of probing_* targets linked}}"""
    layers = {}
    for layer in sorted(os.listdir(src)):
        path = os.path.join(src, layer, "CMakeLists.txt")
        if not os.path.isfile(path):
            continue
        text = re.sub(r"#.*", "", open(path).read())
        targets = set(re.findall(r"add_(?:library|executable)\(\s*(\w+)", text))
        deps = set()
        for body in re.findall(r"target_link_libraries\(\s*\w+([^)]*)\)", text):
            deps |= set(re.findall(r"\bprobing\w*", body))
        layers[layer] = {"targets": targets, "deps": deps}
    return layers


def documented_layers(doc):
    """{layer: (target, set of layers)} from the table whose header is | layer | CMake target | depends on |."""
    rows = {}
    in_table = False
    for line in open(doc):
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| layer | CMake target | depends on |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(cells[0]) <= set("-"):
            continue
        deps = {d.strip().strip("`") for d in cells[2].split(",")} - {"", "—", "-"}
        rows[cells[0]] = (cells[1], deps)
    return rows


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "src")
    doc = os.path.join(root, "docs", "architecture.md")
    layers = cmake_layers(src)
    owner = {t: layer for layer, info in layers.items() for t in info["targets"]}
    errors = []

    direct = {}
    for layer, info in layers.items():
        unknown = [d for d in info["deps"] if d not in owner]
        errors += ["src/%s links %s, which no src/*/CMakeLists.txt defines" % (layer, d) for d in sorted(unknown)]
        direct[layer] = {owner[d] for d in info["deps"] if d in owner} - {layer}

    documented = documented_layers(doc)
    if not documented:
        errors.append("%s has no layer table (| layer | CMake target | depends on |)" % doc)
    for layer in sorted(set(layers) | set(documented)):
        if layer not in documented:
            errors.append("src/%s is not in docs/architecture.md's layer table" % layer)
            continue
        if layer not in layers:
            errors.append("docs/architecture.md lists a layer %s that src/ does not have" % layer)
            continue
        target, deps = documented[layer]
        if target not in layers[layer]["targets"]:
            errors.append("docs/architecture.md names %s the target of src/%s; its CMakeLists defines %s"
                          % (target, layer, ", ".join(sorted(layers[layer]["targets"]))))
        if deps != direct[layer]:
            errors.append("src/%s: docs/architecture.md says it depends on {%s}, CMake links {%s}"
                          % (layer, ", ".join(sorted(deps)), ", ".join(sorted(direct[layer]))))

    def closure(layer, seen=None):
        seen = set() if seen is None else seen
        for d in direct.get(layer, ()):
            if d not in seen:
                seen.add(d)
                closure(d, seen)
        return seen

    include = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')
    for layer in layers:
        allowed = closure(layer) | {layer}
        for dirpath, _, files in os.walk(os.path.join(src, layer)):
            for name in sorted(files):
                if not name.endswith((".cpp", ".h", ".in")):
                    continue
                path = os.path.join(dirpath, name)
                for n, line in enumerate(open(path, errors="replace"), 1):
                    m = include.match(line)
                    if m and m.group(1) in layers and m.group(1) not in allowed:
                        errors.append("%s:%d includes %s/, but src/%s does not depend on %s"
                                      % (os.path.relpath(path, root), n, m.group(1), layer, m.group(1)))
    if errors:
        print("the dependency rule is broken:\n  " + "\n  ".join(errors))
        return 1
    print("%d layers; CMake, docs/architecture.md and every include agree" % len(layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
