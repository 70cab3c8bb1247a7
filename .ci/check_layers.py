#!/usr/bin/env python3
"""Checks that no #include points upward across the layers of the tree.

Each source folder belongs to one layer (the opening comment of its CMakeLists.txt says
which); a file may include headers of its own layer and of the layers it is allowed to
depend on, listed in ALLOWED below. A quoted include is resolved to the folder that holds
the header: "otac/common/x.hpp" by its path, a bare "x.hpp" by the unique folder that has
it. System headers (<...>) are not checked. Exits 1 and names every offending line.

Usage: check_layers.py [SOURCE_DIR]   (default: the repository this script is in)
"""
import os
import re
import sys

# Layer of a file: the longest matching folder prefix. Lowest layers first.
LAYERS = [
    ("common/sys", "sys"),
    ("common/net", "net"),
    ("common/tool", "tool"),
    ("common", "common"),
    ("card-applet/host", "card-host"),
    ("card-applet", "applet"),
    ("terminal", "terminal"),
    ("backend/store", "store"),
    ("backend/service", "service"),
    ("backend/server", "http"),
    ("backend/sms", "sms"),
    ("backend/console", "console"),
    ("backend/app", "app"),
    ("backend/admin", "admin"),
    ("backend/bench", "bench"),
    ("hw", "hw"),
]

# What each layer may include besides itself. bench, tests and fuzz (outside LAYERS, or
# the "bench" layer) may include anything.
ALLOWED = {
    "common": set(),
    "sys": {"common"},
    "net": {"common"},
    "tool": {"common", "sys"},
    "applet": {"common", "sys"},
    "card-host": {"applet", "common", "sys"},
    "terminal": {"common", "sys", "net"},
    "store": {"common", "sys"},
    "service": {"store", "common", "sys"},
    "http": {"service", "store", "common", "sys"},
    "sms": {"http", "service", "store", "common", "sys", "net"},
    "console": {"http", "service", "store", "common", "sys"},
    "app": {"console", "sms", "http", "service", "store", "common", "sys", "net"},
    "admin": {"common", "sys", "net"},
    "hw": {"common", "sys"},
}

# Known exceptions, each with its reason. Keep this list empty where possible.
EXCEPTIONS = set()

SOURCE_EXT = (".cpp", ".hpp", ".h", ".c")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(rel):
    for prefix, name in LAYERS:
        if rel == prefix or rel.startswith(prefix + "/"):
            return name
    return None


def collect(root):
    files = []
    for top in ("common", "card-applet", "terminal", "backend", "hw"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "fuzz_corpus"]
            for f in filenames:
                if f.endswith(SOURCE_EXT):
                    files.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(files)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    files = collect(root)
    by_name = {}
    for rel in files:
        by_name.setdefault(os.path.basename(rel), []).append(rel)
    problems = []
    checked = 0
    for rel in files:
        mine = layer_of(rel)
        if mine is None or mine == "bench":
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                inc = m.group(1)
                here = os.path.normpath(os.path.join(os.path.dirname(rel), inc))
                candidates = [r for r in files if r == here or r.endswith("/" + inc)]
                if not candidates:
                    candidates = by_name.get(os.path.basename(inc), []) if "/" not in inc else []
                if not candidates:
                    continue  # generated or third-party header
                theirs = {layer_of(c) for c in candidates}
                checked += 1
                if mine in theirs:
                    continue
                allowed = ALLOWED.get(mine, set())
                if theirs & allowed:
                    continue
                if any((rel, t) in EXCEPTIONS for t in theirs):
                    continue
                problems.append(f"{rel}:{lineno}: layer '{mine}' includes \"{inc}\" of layer "
                                f"'{'/'.join(sorted(t or '?' for t in theirs))}' (allowed: "
                                f"{', '.join(sorted(allowed)) or 'nothing below'})")
    for p in problems:
        print(p)
    print(f"check_layers: {checked} includes in {len(files)} files checked, {len(problems)} pointing upward")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
