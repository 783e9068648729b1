#!/usr/bin/env python3
"""make-wheel.py RELEASE_DIR OUT_DIR: the wheel of what scripts/release.sh built, in OUT_DIR.

    probing/                    the Python package (lib/probing/python/probing of the stage)
    probing/_bundle/bin/probing the CLI, run by the console entry point `probing` (probing._cli)
    probing/_bundle/lib/probing/libprobing.so   the agent, where the CLI and probing.init() look
    probing.pth                 the PROBE=1 hook: starts the agent in any Python of that environment

Tagged py3-none-manylinux_2_31_x86_64: any CPython 3, glibc 2.31 or newer (check_shipped.py
holds the files to that). Written with zipfile alone: no setuptools, no network."""
import base64
import hashlib
import os
import stat
import sys
import zipfile

TAG = "py3-none-manylinux_2_31_x86_64"


def read_version(repo):
    with open(os.path.join(repo, "VERSION")) as f:
        return f.read().strip()


def pth_hook(release):
    """The hook line of the build's own probing.pth (python/CMakeLists.txt writes it)."""
    with open(os.path.join(release, "build", "lib", "probing", "probing.pth")) as f:
        return f.read().splitlines()[-1]


def entries(release):
    """(path in the wheel, bytes, executable) of every file, package first."""
    stage = os.path.join(release, "stage")
    package = os.path.join(stage, "lib", "probing", "python", "probing")
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                yield "probing/" + name, f.read(), False
    for inside, path in (("bin/probing", "bin/probing"), ("lib/probing/libprobing.so", "lib/probing/libprobing.so")):
        with open(os.path.join(stage, path), "rb") as f:
            yield "probing/_bundle/" + inside, f.read(), True
    yield "probing.pth", (pth_hook(release) + "\n").encode(), False


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    release, out = sys.argv[1:]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    version = read_version(repo)
    info = "probing-%s.dist-info" % version
    metadata = {
        info + "/METADATA": (
            "Metadata-Version: 2.1\nName: probing\nVersion: %s\n"
            "Summary: A live debugger and profiler for Python AI processes (PyTorch training and inference)\n"
            "Requires-Python: >=3.9\n\n"
            "Attach to a running Python process with no restart and no code change: `probing PID eval`,\n"
            "`backtrace`, `query` (SQL over what it recorded), `profile`, on one process or a whole job.\n" % version),
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: probing scripts/make-wheel.py\nRoot-Is-Purelib: false\nTag: %s\n" % TAG,
        info + "/entry_points.txt": "[console_scripts]\nprobing = probing._cli:main\n",
        info + "/top_level.txt": "probing\n",
    }
    os.makedirs(out, exist_ok=True)
    wheel = os.path.join(out, "probing-%s-%s.whl" % (version, TAG))
    records = []
    with zipfile.ZipFile(wheel + ".tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        files = [(p, d, x) for p, d, x in entries(release)]
        files += [(p, t.encode(), False) for p, t in metadata.items()]
        for path, data, executable in files:
            zi = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))  # the same bytes from the same build
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            z.writestr(zi, data)
            records.append(record_line(path, data))
        records.append(info + "/RECORD,,")
        zi = zipfile.ZipInfo(info + "/RECORD", date_time=(2020, 1, 1, 0, 0, 0))
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = (0o644 | stat.S_IFREG) << 16
        z.writestr(zi, "\n".join(records) + "\n")
    os.replace(wheel + ".tmp", wheel)
    print("make-wheel: %s (%.1f MB)" % (wheel, os.path.getsize(wheel) / 2**20))


if __name__ == "__main__":
    main()
