"""probing.connect(): talk to a probed process from Python (a notebook, a script, a test).

Pure Python over the agent's HTTP API (docs/python-client.md); it needs no agent in *this*
process::

    from probing import connect
    with connect(pid=12345) as probe:
        print(probe.eval("model.training"))
        frames = probe.backtrace()
    with connect("trainer-7:9000", tls=True) as probe:   # token= defaults to $PROBING_TOKEN
        ...

Errors:
  RemoteError        the code raised in the target, or the agent refused the request
                     (.type, .message, .traceback, .output); .type "Unauthorized" (HTTP 401: no
                     token or a wrong one), "PermissionDenied" (403: the token may not do this)
  TimeoutError       a RemoteError that is also the builtin TimeoutError: the code ran past its
                     timeout (the target keeps running) or the agent did not answer in time
  NotSupported       a RemoteError: the agent has no such route (an older agent)
  TargetUnavailable  a ConnectionError: no such process, no agent in it, nothing at host:port,
                     the host does not resolve, the TLS handshake failed
  ConnectionLost     a TargetUnavailable: the target closed the connection mid-call (it exited)
"""

import builtins
import http.client
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse

__all__ = ["connect", "Probe", "Cluster", "RemoteError", "NotSupported", "TargetUnavailable", "ConnectionLost"]

DEFAULT_TIMEOUT = 30.0
_GRACE_S = 10.0  # the agent answers by an eval's deadline plus its grace period


class RemoteError(Exception):
    """The target (or its agent) reported an error. `type` is the Python exception's class name
    ("ZeroDivisionError") or the agent's error type ("BadRequest", "Timeout", "NotFound");
    `traceback` the remote traceback text ("" when there is none); `output` what the code
    printed before it failed."""

    def __init__(self, type, message, traceback="", output="", status=None):
        self.type = type
        self.message = message
        self.traceback = traceback or ""
        self.output = output or ""
        self.status = status
        super().__init__(self._text())

    def _text(self):
        if self.traceback:
            return "%s: %s\n\nRemote traceback:\n%s" % (self.type, self.message, self.traceback.rstrip("\n"))
        return "%s: %s" % (self.type, self.message)


class TimeoutError(RemoteError, builtins.TimeoutError):
    """The code ran past its timeout and was interrupted (the target keeps running), or the agent
    did not answer in time. Caught by `except TimeoutError` for the builtin as well."""

    def __init__(self, message, output="", status=None):
        RemoteError.__init__(self, "Timeout", message, output=output, status=status)


class NotSupported(RemoteError):
    """The agent has no such route (an older agent, or a feature not built yet)."""


class TargetUnavailable(builtins.ConnectionError):
    """Nothing to talk to: no such process, no agent in it, nothing listening at host:port, a host
    that does not resolve, or a failed TLS handshake (the message says which)."""


class ConnectionLost(TargetUnavailable):
    """The target closed the connection during a call; usually it exited."""


def _parse_target(target, pid):
    """("unix", address) or ("tcp", (host, port)); `target` as the CLI takes it."""
    if pid is not None and target is not None:
        raise ValueError("give a target or pid=, not both")
    if pid is None and target is None:
        raise ValueError("give the process to talk to: connect(pid=1234), connect('host:port') or connect('unix:PATH')")
    if pid is None and isinstance(target, int):
        pid = target
    if pid is None and isinstance(target, str) and target.isdigit():
        pid = int(target)
    if pid is not None:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError("pid must be a positive int, got %r" % (pid,))
        return "pid", pid, "\0probing-%d" % pid
    if not isinstance(target, str):
        raise TypeError("target must be a str or an int, got %s" % type(target).__name__)
    if target.startswith("unix:"):
        path = target[5:]
        if not path:
            raise ValueError("unix: needs a path, e.g. unix:/run/probing.sock or unix:@name")
        return "unix", None, "\0" + path[1:] if path.startswith("@") else path
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("target must be a pid, host:port or unix:PATH, got %r" % target)
    return "tcp", None, (host.strip("[]"), int(port))


def _pid_in_own_namespace(pid):
    """The pid process `pid` has in its own pid namespace (the last number of its NSpid line)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return pid


def _unix_socket_in_netns_of(pid):
    """A unix socket made in the network namespace of `pid`, where its agent's abstract name
    lives: a container with a network of its own binds it there. The namespace is joined by a
    short-lived thread (setns changes only the calling thread; a socket stays where it was made),
    which needs CAP_SYS_ADMIN for another namespace."""
    try:
        same = os.stat("/proc/self/ns/net") == os.stat("/proc/%d/ns/net" % pid)
    except OSError:
        same = True
    if same:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    import ctypes
    import threading
    result = {}

    def make():
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            result["error"] = e
            return
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                err = ctypes.get_errno()
                result["error"] = PermissionError(err, "process %d is in another network namespace, where its "
                                                       "agent's socket is; joining it needs root (CAP_SYS_ADMIN)"
                                                  % pid)
                return
            result["socket"] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        finally:
            os.close(fd)

    t = threading.Thread(target=make, name="probing-setns", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


class _NotTheTarget(Exception):
    """@probing-PID answered, but from another process (pid, uid): the name was taken first."""

    def __init__(self, pid, uid):
        super().__init__(pid, uid)
        self.pid = pid
        self.uid = uid


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket. With `expected_pid`, the listener must be that process (its
    SO_PEERCRED), checked before a byte is sent: an abstract name can be bound by anyone first."""

    def __init__(self, address, timeout, expected_pid=None):
        super().__init__("probing", timeout=timeout)
        self._address = address
        self._expected_pid = expected_pid

    def connect(self):
        address = self._address
        if self._expected_pid is not None:
            # The agent names its socket by the pid it sees (in a container, its own namespace's),
            # in its own network namespace.
            address = "\0probing-%d" % _pid_in_own_namespace(self._expected_pid)
            s = _unix_socket_in_netns_of(self._expected_pid)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(address)
            if self._expected_pid is not None:
                pid, uid, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))
                if pid != self._expected_pid:
                    raise _NotTheTarget(pid, uid)
        except BaseException:
            s.close()
            raise
        self.sock = s


class _HandshakeFailed(Exception):
    """The TCP connection was made and the TLS handshake on it failed; the cause is `error`."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


class _TlsHTTPConnection(http.client.HTTPSConnection):
    """HTTPS that tells a failed TLS handshake apart from a failed TCP connect (for the message)."""

    def __init__(self, host, port, timeout, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_context = context

    def connect(self):
        http.client.HTTPConnection.connect(self)
        try:
            self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self.host)
        except (OSError, ValueError) as e:
            self.sock.close()
            self.sock = None
            raise _HandshakeFailed(e) from None


def _tls_context(cacert, insecure):
    """A client context, TLS 1.2+: the system CAs, or only `cacert`'s; no checks when insecure."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=cacert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _process_exited(pid, wait=0.5):
    # A process's sockets close before it becomes a zombie: a caller that just saw its connection
    # close gives it a moment to finish exiting.
    deadline = time.monotonic() + wait
    while _process_exists(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


class Probe:
    """A connection to one target. Each call is one HTTP request on a fresh connection (the
    agent closes idle ones), so a Probe may be kept for as long as the target lives, and used
    from several threads (calls share no socket). close() makes every later call raise."""

    def __init__(self, target=None, *, pid=None, token=None, timeout=DEFAULT_TIMEOUT, tls=False, cacert=None,
                 insecure=False):
        self._kind, self.pid, self._address = _parse_target(target, pid)
        self.target = str(self.pid) if self.pid is not None else target
        self.token = os.environ.get("PROBING_TOKEN") if token is None else token
        self.timeout = float(timeout)
        self.tls = bool(tls or cacert or insecure)
        if self.tls and self._kind != "tcp":
            raise ValueError("tls, cacert and insecure are for host:port targets; %s is reached over its local socket"
                             % self._name())
        self._cacert, self._insecure = cacert, bool(insecure)
        self._tls_context = None
        if self.tls:
            try:
                self._tls_context = _tls_context(cacert, insecure)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise ValueError("cacert=%r is not a readable PEM certificate file: %s" % (cacert, e)) from None
        self._closed = False

    def __repr__(self):
        return "<probing.Probe %s%s>" % (self._name(), " closed" if self._closed else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Forgets the target; later calls raise ValueError. The target is not touched."""
        self._closed = True

    # -- the API ---------------------------------------------------------------------------

    def health(self):
        """GET /health as a dict (pid, python version, agent version, ...)."""
        return self._call("GET", "/health", timeout=self.timeout)

    def eval(self, code, timeout=None):
        """Runs `code` in the target's __main__ and returns what it printed, followed by the repr
        of a final expression's value on its own line (as `probing PID eval` prints them).
        Raises RemoteError (with the remote traceback) when the code raised, TimeoutError when it
        ran past `timeout` seconds (default: this Probe's timeout; the target keeps running)."""
        if not isinstance(code, str):
            raise TypeError("code must be a str, got %s" % type(code).__name__)
        limit = self.timeout if timeout is None else float(timeout)
        if limit <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        reply = self._call("POST", "/eval", {"code": code, "timeout": limit}, timeout=limit + _GRACE_S)
        output = reply.get("output") or ""
        exc = reply.get("exception")
        if exc:
            raise RemoteError(exc.get("type", "Exception"), exc.get("message", ""), exc.get("traceback", ""),
                              output=output)
        if reply.get("value") is not None:
            if output and not output.endswith("\n"):
                output += "\n"
            output += reply["value"] + "\n"
        return output

    def query(self, sql):
        """Runs SQL in the target: a pandas DataFrame when pandas can be imported, else a list of
        dicts (one per row). A bad query raises RemoteError with type 'SQLError' and SQLite's
        message; a result past the agent's row cap (query.max_rows) comes back cut."""
        if not isinstance(sql, str):
            raise TypeError("sql must be a str, got %s" % type(sql).__name__)
        reply = self._call("POST", "/query", {"sql": sql}, timeout=self.timeout)
        columns = reply.get("columns") or []
        rows = [dict(zip(columns, row)) if isinstance(row, list) else row for row in reply.get("rows") or []]
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows, columns=columns or None)

    def backtrace(self, thread=None, all=False, locals=False):
        """The target's Python stack, innermost frame first (GET /backtrace). By default the main
        thread's frames (or `thread`'s, a threading ident or kernel tid): a list of dicts with
        depth, func, file, lineno, source, frame_type (and with locals=True, locals: a list of
        {"name", "value", "kind"} in the order the function declares them, arguments first). With
        all=True, every thread: a list of dicts with thread_id, name, frames, ..."""
        params = {}
        if thread is not None:
            params["thread"] = str(int(thread))
        for name, on in (("all", all), ("locals", locals)):
            if on:
                params[name] = "1"
        path = "/backtrace" + ("?" + urllib.parse.urlencode(params) if params else "")
        reply = self._call("GET", path, timeout=self.timeout)
        threads = reply.get("threads") if isinstance(reply, dict) else None
        if threads is None:
            return reply
        if all:
            return threads
        return threads[0].get("frames", []) if threads else []

    @property
    def cluster(self):
        """Every rank of the distributed job this target is a rank of: a Cluster
        (docs/cluster.md)."""
        return Cluster(self)

    # -- HTTP --------------------------------------------------------------------------------

    def _name(self):
        if self._kind == "pid":
            return "process %d" % self.pid
        return self.target

    def _connection(self, timeout):
        if self._kind == "tcp":
            host, port = self._address
            if self.tls:
                return _TlsHTTPConnection(host, port, timeout, self._tls_context)
            return http.client.HTTPConnection(host, port, timeout=timeout)
        return _UnixHTTPConnection(self._address, timeout, self.pid if self._kind == "pid" else None)

    def _connect_error(self, e):
        if self._kind == "pid":
            if not _process_exists(self.pid):
                return TargetUnavailable("no process %d" % self.pid)
            return TargetUnavailable("process %d has no probing agent; attach one with: probing %d inject"
                                     % (self.pid, self.pid))
        if self._kind == "tcp":
            if isinstance(e, socket.gaierror):
                return TargetUnavailable("cannot resolve host '%s' (of %s): %s"
                                         % (self._address[0], self.target, e.strerror or e))
            if isinstance(e, ConnectionRefusedError):
                return TargetUnavailable("cannot connect to %s: nothing listens on that port (is the agent serving "
                                         "TCP? start the target with PROBING_PORT)" % self.target)
            return TargetUnavailable("cannot connect to %s: %s" % (self.target, e.strerror or e))
        return TargetUnavailable("nothing listens on %s: %s" % (self.target, e.strerror or e))

    def _handshake_error(self, e, timeout):
        prefix = "TLS handshake with %s" % self.target
        if isinstance(e, socket.timeout):
            return TimeoutError("%s got no answer within %g s; is the agent using TLS (PROBING_TLS_CERT)?"
                                % (prefix, timeout))
        if isinstance(e, ssl.SSLCertVerificationError):
            return TargetUnavailable("%s failed: the agent's certificate was refused: %s; give cacert=FILE (its "
                                     "certificate or CA) or insecure=True" % (prefix, str(e.verify_message or e).rstrip(".")))
        reason = getattr(e, "reason", None)  # "WRONG_VERSION_NUMBER"
        reason = reason.lower().replace("_", " ") if reason else (e.strerror or str(e) or type(e).__name__)
        if reason in ("wrong version number", "packet length too long"):  # a plain-HTTP agent's reply
            return TargetUnavailable("%s failed: the agent answers in plain HTTP, not TLS (it was started without "
                                     "PROBING_TLS_CERT): drop tls=, cacert= and insecure=" % prefix)
        if isinstance(e, (ConnectionResetError, ssl.SSLEOFError)) or not str(e):
            reason = "the agent closed the connection"
        return TargetUnavailable("%s failed: %s; is the agent using TLS (PROBING_TLS_CERT)? give cacert= or "
                                 "insecure=True" % (prefix, reason))

    def _lost(self, what):
        hint = ""
        if self._kind == "pid" and _process_exited(self.pid):
            hint = ": the process exited"
        elif self._kind == "tcp" and not self.tls:
            hint = " (if the agent serves TLS, give tls=True)"
        return ConnectionLost("%s closed the connection while %s%s" % (self._name(), what, hint))

    def _call(self, method, path, body=None, timeout=None):
        if self._closed:
            raise ValueError("this probing connection is closed")
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Connection": "close"}
        if self._kind != "tcp":
            headers["Host"] = "probing"
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        conn = self._connection(timeout)
        try:
            try:
                conn.connect()
            except _HandshakeFailed as e:
                raise self._handshake_error(e.error, timeout) from None
            except _NotTheTarget as e:
                raise TargetUnavailable("@probing-%d is held by process %d (uid %d), not by process %d: nothing "
                                        "was sent to it" % (self.pid, e.pid, e.uid, self.pid)) from None
            except socket.timeout:
                raise TimeoutError("connecting to %s timed out after %g s" % (self._name(), timeout)) from None
            except OSError as e:
                raise self._connect_error(e) from None
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except socket.timeout:
                raise TimeoutError("%s did not answer %s %s within %g s" % (self._name(), method, path, timeout)) from None
            except (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError,
                    BrokenPipeError, ssl.SSLEOFError) as e:
                raise self._lost("answering %s %s" % (method, path)) from e
            except http.client.HTTPException as e:
                hint = "; if the agent serves TLS, give tls=True" if self._kind == "tcp" and not self.tls else ""
                raise RemoteError("BadReply", "the reply from %s is not HTTP (%s %r)%s"
                                  % (self._name(), type(e).__name__, str(e)[:40], hint)) from None
        finally:
            conn.close()
        try:
            reply = json.loads(data.decode("utf-8")) if data else {}
        except ValueError:
            raise RemoteError("BadReply", "the agent sent a reply that is not JSON: %r" % data[:200],
                              status=response.status) from None
        if response.status == 200:
            return reply
        error = reply.get("error") if isinstance(reply, dict) else None
        error = error if isinstance(error, dict) else {}
        etype = error.get("type", "HTTP %d" % response.status)
        message = error.get("message", data[:200].decode("utf-8", "replace"))
        output = reply.get("output", "") if isinstance(reply, dict) else ""
        if etype == "Timeout" or response.status == 504:
            raise TimeoutError(message, output=output, status=response.status)
        if response.status == 404 and message.startswith("no route"):
            raise NotSupported(etype, message, status=404)
        raise RemoteError(etype, message, output=output, status=response.status)


def _cli_path():
    """The probing command: $PROBING_CLI, else the one installed with this package
    (PREFIX/bin/probing, the package being in PREFIX/lib/probing/python/probing), else on PATH."""
    if os.environ.get("PROBING_CLI"):
        return os.environ["PROBING_CLI"]
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.normpath(os.path.join(here, "..", "..", "..", "..", "bin", "probing"))
    if os.access(installed, os.X_OK):
        return installed
    found = shutil.which("probing")
    if not found:
        raise TargetUnavailable("the probing command is needed for a cluster and was not found "
                                "(install probing, or set PROBING_CLI)")
    return found


class Cluster:
    """Every rank of a job, through the probing command, which finds the ranks (this host's by
    their environment, the others through rank 0's agent), asks them all at once and merges
    their answers (docs/cluster.md). Each call leaves `coverage`: how many ranks answered, and
    why the others did not ("7/8 ranks answered\n  rank 5 dead: process 4247 exited")."""

    def __init__(self, probe, timeout=None):
        self.probe = probe
        self.timeout = probe.timeout if timeout is None else float(timeout)
        self.coverage = ""

    def __repr__(self):
        return "<probing.Cluster of %s>" % self.probe._name()

    def nodes(self):
        """One dict per rank: rank, host, pid, state, step, last_step, seen."""
        return self._rows(self._run(["nodes", "--format", "json"]))

    def query(self, sql, ranks=None):
        """SQL over every rank (or `ranks`, like [0, 3]): rows with _rank and _host, a DataFrame
        when pandas can be imported, else a list of dicts."""
        if not isinstance(sql, str):
            raise TypeError("sql must be a str, got %s" % type(sql).__name__)
        rows = self._rows(self._run(["query", "--format", "json", *self._ranks(ranks), sql]))
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def backtrace(self, exact=False, all_threads=False, ranks=None):
        """The main thread of every rank (every thread with all_threads), ranks whose stacks
        match grouped, largest group first: a list of {"ranks": [...], "thread": {...}}."""
        args = ["backtrace", "--json", *self._ranks(ranks)]
        if exact:
            args.append("--exact")
        if all_threads:
            args.append("--all-threads")
        return json.loads(self._run(args, ok_codes=(0, 1)) or "{}").get("groups", [])

    def eval(self, code, ranks=None):
        """Runs `code` on every rank (or `ranks`): {rank: reply} with each rank's output, value
        and exception (None when it did not raise)."""
        reply = json.loads(self._run(["eval", "--json", *self._ranks(ranks), code], ok_codes=(0, 1)) or "{}")
        return {int(rank): r for rank, r in reply.get("results", {}).items()}

    @staticmethod
    def _ranks(ranks):
        return ["--ranks", ",".join(str(int(r)) for r in ranks)] if ranks else []

    @staticmethod
    def _rows(text):
        rows = json.loads(text or "[]")
        return rows if isinstance(rows, list) else []

    def _run(self, args, ok_codes=(0,)):
        p = self.probe
        cmd = [_cli_path()]
        if p.tls:
            cmd.append("--tls")
        if p._cacert:
            cmd += ["--cacert", p._cacert]
        if p._insecure:
            cmd.append("--insecure")
        env = dict(os.environ)
        if p.token:
            env["PROBING_TOKEN"] = p.token  # not on the command line, where ps would show it
        cmd += ["cluster", "-t", p.target, args[0], "--timeout", "%g" % self.timeout, *args[1:]]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=self.timeout + 10,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TimeoutError("probing cluster %s did not return within %g s" % (args[0], self.timeout + 10)) from None
        lines = done.stderr.splitlines()
        start = next((i for i, l in enumerate(lines) if l.split(" ")[0].count("/") == 1
                      and " ranks answered" in l), None)
        self.coverage = "\n".join(lines[start:]) if start is not None else ""
        if done.returncode not in ok_codes:
            message = "\n".join(l[len("probing: "):] if l.startswith("probing: ") else l for l in lines[:start])
            raise RemoteError("ClusterError", message.strip() or "probing cluster %s failed" % args[0],
                              status=done.returncode)
        return done.stdout


def connect(target=None, *, pid=None, token=None, timeout=DEFAULT_TIMEOUT, tls=False, cacert=None, insecure=False):
    """A Probe for one target: connect(pid=1234), connect(1234), connect("host:8080", token=...),
    or connect("unix:/path/to.sock"). `timeout` is how long a call may take (and an eval's
    default timeout). Checks that the agent answers; raises TargetUnavailable if it does not.

    For a host:port target: `token` (default: $PROBING_TOKEN) is sent as "Authorization: Bearer
    TOKEN"; `tls=True` speaks TLS 1.2+, checking the agent's certificate against the system CAs
    and its host name; `cacert=FILE` checks it against FILE's certificates instead, and
    `insecure=True` checks nothing (both imply tls). A refused token raises RemoteError with
    .type "Unauthorized" (401), a token without the right "PermissionDenied" (403)."""
    probe = Probe(target, pid=pid, token=token, timeout=timeout, tls=tls, cacert=cacert, insecure=insecure)
    probe.health()
    return probe
