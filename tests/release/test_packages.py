"""The wheel and the .deb, installed where they were not built (`make test-release`).

PROBING_DIST names the directory with probing-*.whl, probing_*.deb and the release tree's stage
(PROBING_RELEASE, scripts/release.sh's output); PROBING_MATRIX_CACHE the chroots of
scripts/matrix-chroot.sh. Per chroot (Debian 11 with CPython 3.9 and torch 1.7, Debian 13 with
3.13 and torch 2.6, sid with 3.14 and torch 2.14): pip installs the wheel into a venv with no
network, and the CLI from that venv runs launch, inject, eval, backtrace and query against a
target in the same chroot, and reads torch tracing's rows where torch is there. From the host:
the CLI injects the agent into a target whose root holds glibc, libgcc_s and CPython 3.9's own
libraries alone. The .deb installs with apt in each chroot (PROBE=1 then works for Debian's
python3 there), and with dpkg into an empty root. Needs root (chroot and bind mounts)."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST = os.path.abspath(os.environ.get("PROBING_DIST", os.path.join(REPO, "dist")))
RELEASE = os.path.abspath(os.environ.get("PROBING_RELEASE", os.path.join(REPO, "build-release")))
CACHE = os.environ.get("PROBING_MATRIX_CACHE", "/var/cache/probing-matrix")
VERSION = open(os.path.join(REPO, "VERSION")).read().strip()
CHECK_SHIPPED = os.path.join(REPO, "tests", "release", "check_shipped.py")
IDLE = os.path.join(REPO, "tests", "e2e", "targets", "idle.py")
TRAIN = os.path.join(REPO, "examples", "train.py")
# suite: (interpreter in the chroot, the version its torch starts with)
SUITES = {"bullseye": ("python3.9", "1.7"), "trixie": ("python3.13", "2.6"), "sid": ("python3.14", "2.")}


def one(pattern):
    found = glob.glob(os.path.join(DIST, pattern))
    assert len(found) == 1, "%s: expected one %s, found %s (make wheel deb)" % (DIST, pattern, found)
    return found[0]


@pytest.fixture(scope="session")
def work():
    # Under /tmp, which every chroot sees at the same path: the venvs, the targets' copies.
    d = tempfile.mkdtemp(prefix="probing-release-", dir="/tmp")
    for script in (IDLE, TRAIN):
        shutil.copy(script, d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def target(work, script):
    """The copy under /tmp of one of the target scripts, which the chroots see."""
    return os.path.join(work, os.path.basename(script))


class Root:
    """A directory to chroot into, with the host's /proc, /sys, /dev and /tmp bound in."""

    def __init__(self, path):
        self.path = path
        self.mounted = []

    def __enter__(self):
        for m in ("proc", "sys", "dev", "dev/pts", "tmp"):
            target = os.path.join(self.path, m)
            os.makedirs(target, exist_ok=True)
            subprocess.run(["mount", "--bind", "/" + m, target], check=True)
            self.mounted.append(target)
        return self

    def __exit__(self, *exc):
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", target], check=False)

    def argv(self, *cmd):
        return ["chroot", self.path, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", *cmd]

    def run(self, *cmd, timeout=120, check=True, env=()):
        p = subprocess.run(self.argv(*env, *cmd), capture_output=True, text=True, timeout=timeout)
        if check:
            assert p.returncode == 0, "%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr)
        return p

    def start(self, *cmd, env=()):
        p = subprocess.Popen(self.argv(*env, *cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        deadline = time.monotonic() + 120
        while line and "ready" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()
        assert "ready" in line, "%s did not start: %s" % (" ".join(cmd), p.stderr.read() if p.poll() is not None else line)
        return p


def stop(p):
    p.kill()
    p.wait(timeout=30)


def query(run, probing, pid, sql):
    out = run(probing, str(pid), "query", "--format", "json", sql).stdout
    return json.loads(out)


def test_the_shipped_files_need_the_c_library_alone(work):
    # The stage, the wheel's and the .deb's files: glibc 2.31 or older, no libstdc++, OpenSSL,
    # libdw..., stripped, 10 MB at most each.
    unpacked = os.path.join(work, "unpacked")
    with zipfile.ZipFile(one("probing-%s-py3-none-manylinux_2_31_x86_64.whl" % VERSION)) as z:
        z.extractall(os.path.join(unpacked, "wheel"))
    subprocess.run(["dpkg-deb", "-x", one("probing_%s_amd64.deb" % VERSION), os.path.join(unpacked, "deb")], check=True)
    for tree in (os.path.join(RELEASE, "stage"), os.path.join(unpacked, "wheel"), os.path.join(unpacked, "deb")):
        p = subprocess.run([sys.executable, CHECK_SHIPPED, tree], capture_output=True, text=True)
        print(p.stdout)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "check_shipped: 2 files," in p.stdout, p.stdout  # the CLI and the agent, nothing more, nothing less


def test_the_wheel_lists_what_it_holds():
    with zipfile.ZipFile(one("probing-*.whl")) as z:
        names = set(z.namelist())
        info = "probing-%s.dist-info/" % VERSION
        for name in ("probing/__init__.py", "probing/_cli.py", "probing/_version.py", "probing/_bundle/bin/probing",
                     "probing/_bundle/lib/probing/libprobing.so", "probing.pth", info + "RECORD",
                     info + "entry_points.txt", info + "WHEEL", info + "METADATA"):
            assert name in names, (name, sorted(names))
        assert "probing = probing._cli:main" in z.read(info + "entry_points.txt").decode()
        assert "Version: %s\n" % VERSION in z.read(info + "METADATA").decode()
        assert z.getinfo("probing/_bundle/bin/probing").external_attr >> 16 & 0o111
        assert "PROBE" in z.read("probing.pth").decode()


@pytest.mark.parametrize("suite", list(SUITES))
def test_the_wheel_works_in_a_venv_of_another_debian(suite, work):
    root_path = os.path.join(CACHE, suite)
    if not os.path.isdir(root_path):
        pytest.skip("no %s chroot in %s (scripts/matrix-chroot.sh %s)" % (suite, CACHE, suite))
    interpreter, torch_version = SUITES[suite]
    python = "/usr/bin/" + interpreter
    wheel = os.path.join(work, os.path.basename(one("probing-*.whl")))
    shutil.copy(one("probing-*.whl"), wheel)
    venv = os.path.join(work, "venv-" + suite)
    with Root(root_path) as root:
        # The recipe installs torch: a chroot where it does not import is broken, not torchless.
        found = root.run(python, "-c", "import torch; print(torch.__version__)", check=False)
        assert found.stdout.startswith(torch_version), found
        root.run(python, "-m", "venv", "--system-site-packages", venv)
        root.run(venv + "/bin/pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", wheel, timeout=300)
        probing = venv + "/bin/probing"
        assert root.run(probing, "--version").stdout.startswith("probing %s (commit " % VERSION)
        # The chroot's own python3 lacks the hook; doctor says how a wheel user gives it one.
        doctor = root.run(probing, "doctor").stdout
        assert "agent library %s/" % venv in doctor and "-m pip install probing-*.whl" in doctor, doctor

        # launch, eval, backtrace, query: the agent preloaded by the venv's CLI.
        idle = target(work, IDLE)
        t = root.start(probing, "launch", "--", venv + "/bin/python", idle)
        try:
            pid = t.pid  # chroot, env and launch each exec the next
            assert root.run(probing, str(pid), "eval", "print(model['layers'] * 14)").stdout == "42\n"
            stack = root.run(probing, str(pid), "backtrace").stdout
            assert '"MainThread"' in stack and "<module> (%s:" % idle in stack, stack
            rows = query(root.run, probing, pid, "SELECT python FROM process.info")
            assert rows and rows[0]["python"].startswith(interpreter[len("python"):]), rows
        finally:
            stop(t)

        # inject into a Python started without the agent; then PROBE=1 through the wheel's probing.pth.
        t = root.start(venv + "/bin/python", idle)
        try:
            root.run(probing, str(t.pid), "inject", timeout=120)
            assert root.run(probing, str(t.pid), "eval", "print(model['layers'] + 7)").stdout == "10\n"
        finally:
            stop(t)
        t = root.start(venv + "/bin/python", idle, env=("PROBE=1",))
        try:
            assert root.run(probing, str(t.pid), "eval", "import probing; print(probing.__version__)").stdout == VERSION + "\n"
        finally:
            stop(t)

        # The .deb, with apt, as on a machine of that release: /usr/bin/probing, and PROBE=1 for
        # Debian's python3 through /usr/lib/python3/dist-packages/probing.pth. Removed after.
        deb = os.path.join(work, os.path.basename(one("probing_*.deb")))
        shutil.copy(one("probing_*.deb"), deb)
        try:
            root.run("apt-get", "install", "-y", "-q", deb, timeout=300,
                     env=("DEBIAN_FRONTEND=noninteractive",))
            assert root.run("/usr/bin/probing", "--version").stdout.startswith("probing %s (commit " % VERSION)
            t = root.start("/usr/bin/python3", idle, env=("PROBE=1",))
            try:
                out = root.run("/usr/bin/probing", str(t.pid), "eval", "import probing; print(probing.__file__)").stdout
                assert out == "/usr/lib/probing/python/probing/__init__.py\n", out
            finally:
                stop(t)
        finally:
            root.run("apt-get", "purge", "-y", "-q", "probing", check=False, env=("DEBIAN_FRONTEND=noninteractive",))
        assert not os.path.exists(root_path + "/usr/lib/python3/dist-packages/probing.pth")

        t = root.start(venv + "/bin/python", target(work, TRAIN), env=("PROBE=1",))
        try:
            deadline = time.monotonic() + 120
            while True:
                rows = query(root.run, probing, t.pid, "SELECT count(*) AS n, max(step) AS s FROM python.torch_trace")
                if rows[0]["s"] is not None and rows[0]["s"] >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert rows[0]["s"] is not None and rows[0]["s"] >= 2, rows
            modules = query(root.run, probing, t.pid, "SELECT DISTINCT module FROM python.torch_trace WHERE module LIKE '%head%'")
            assert modules, "no row for the model's head"
        finally:
            stop(t)


def bare_root(work):
    """A root with bullseye's CPython 3.9, the libraries it links (glibc's, libz, libexpat) and
    libgcc_s (which glibc's pthread_exit loads): no libstdc++, no OpenSSL, nothing else."""
    bullseye = os.path.join(CACHE, "bullseye")
    root = os.path.join(work, "bare")
    ldd = subprocess.run(["chroot", bullseye, "ldd", "/usr/bin/python3.9"], capture_output=True, text=True, check=True).stdout
    files = ["/usr/bin/python3.9", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "/usr/bin/env"]
    files += [w for line in ldd.splitlines() for w in line.split() if w.startswith("/")]
    for f in files:
        dest = root + f
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(os.path.realpath(bullseye + f), dest)
    for link, to in (("lib64", "usr/lib64"), ("lib", "usr/lib"), ("bin", "usr/bin")):
        if not os.path.exists(os.path.join(root, link)):
            os.symlink(to, os.path.join(root, link))
    shutil.copytree(bullseye + "/usr/lib/python3.9", root + "/usr/lib/python3.9", symlinks=True,
                    ignore=shutil.ignore_patterns("test", "__pycache__", "lib2to3", "idlelib", "tkinter"))
    return root


def test_inject_from_the_host_into_a_root_with_glibc_alone(work):
    if not os.path.isdir(os.path.join(CACHE, "bullseye")):
        pytest.skip("no bullseye chroot in %s (scripts/matrix-chroot.sh bullseye)" % CACHE)
    unpacked = os.path.join(work, "host-wheel")
    with zipfile.ZipFile(one("probing-*.whl")) as z:
        z.extractall(unpacked)
    probing = os.path.join(unpacked, "probing", "_bundle", "bin", "probing")
    os.chmod(probing, 0o755)
    root = bare_root(work)
    with Root(root) as r:
        t = r.start("/usr/bin/python3.9", target(work, IDLE))
        try:
            maps = open("/proc/%d/maps" % t.pid).read()
            assert "libstdc++" not in maps and "libssl" not in maps
            p = subprocess.run([probing, str(t.pid), "inject"], capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stdout + p.stderr
            p = subprocess.run([probing, str(t.pid), "eval", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
            assert p.stdout == "(3, 9)\n", p.stdout + p.stderr
            maps = open("/proc/%d/maps" % t.pid).read()
            assert "libprobing.so" in maps and "libstdc++" not in maps and "libssl" not in maps
        finally:
            stop(t)


def test_the_deb_installs_with_dpkg(work):
    # Into an empty admin directory and root: what dpkg would put on a Debian 12 or 13 machine.
    deb = one("probing_%s_amd64.deb" % VERSION)
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends"], capture_output=True, text=True,
                            check=True).stdout
    assert "Version: %s" % VERSION in fields and "libc6 (>= 2.31)" in fields, fields
    contents = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/probing", "./usr/lib/probing/libprobing.so", "./usr/lib/probing/python/probing/__init__.py",
                 "./usr/lib/python3/dist-packages/probing.pth"):
        assert path in contents, (path, contents)
    root = os.path.join(work, "deb-root")
    admin = os.path.join(root, "var", "lib", "dpkg")
    os.makedirs(os.path.join(admin, "updates"))
    os.makedirs(os.path.join(admin, "info"))
    open(os.path.join(admin, "status"), "w").close()
    p = subprocess.run(["dpkg", "--root", root, "--admindir", admin, "--force-depends", "--force-not-root", "-i", deb],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    out = subprocess.run([os.path.join(root, "usr", "bin", "probing"), "--version"], capture_output=True, text=True)
    assert out.stdout.startswith("probing %s" % VERSION), out
    # The CLI finds the agent the package installed beside it.
    out = subprocess.run([os.path.join(root, "usr", "bin", "probing"), "doctor"], capture_output=True, text=True)
    assert os.path.join(root, "usr", "lib", "probing", "libprobing.so") in out.stdout + out.stderr, out
