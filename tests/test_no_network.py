"""No network at run time: every example workflow runs through a ComfyUI server whose sockets reach loopback only.

The server process (and any Python process it starts) imports a sitecustomize.py from PYTHONPATH that wraps
socket.connect / connect_ex / sendto / create_connection and the name lookups: anything but a loopback address is
refused before a packet leaves, and recorded. The test asserts every workflow succeeds and nothing was recorded.
"""
import json
import os
import pathlib
import subprocess
import textwrap

import pytest

from host_env import host_python
from test_reliability import dedicated_server
from test_workflows import WORKFLOWS, small
from workflow_api import to_api

SITECUSTOMIZE = textwrap.dedent('''
    """Test-only network guard (tests/test_no_network.py): loopback only; other attempts are refused and recorded."""
    import errno
    import ipaddress
    import json
    import os
    import socket
    import traceback

    _RECORD = os.environ.get("IPAKIT_NET_RECORD")
    _LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
    _real = {name: getattr(socket, name) for name in
             ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "create_connection")}
    _real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    _real_sendto = socket.socket.sendto


    def record(kind, target):
        if _RECORD:
            with open(_RECORD, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "kind": kind, "target": repr(target),
                                    "stack": traceback.format_stack(limit=12)[:-2]}) + "\\n")


    def loopback(host):
        if host is None:
            return True
        host = host.decode() if isinstance(host, bytes) else str(host)
        if host.lower() in _LOCAL_NAMES:
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False


    def allowed(sock, address):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True  # unix sockets, netlink...
        return loopback(address[0] if isinstance(address, tuple) else address)


    def connect(self, address):
        if not allowed(self, address):
            record("connect", address)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"network blocked by the test: {address!r}")
        return _real_connect(self, address)


    def connect_ex(self, address):
        if not allowed(self, address):
            record("connect_ex", address)
            return errno.ECONNREFUSED
        return _real_connect_ex(self, address)


    def sendto(self, data, *args):
        if args and not allowed(self, args[-1]):
            record("sendto", args[-1])
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"network blocked by the test: {args[-1]!r}")
        return _real_sendto(self, data, *args)


    def _lookup(name):
        def guarded(host, *args, **kwargs):
            if not loopback(host):
                record(name, host)
                raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked by the test: {host!r}")
            return _real[name](host, *args, **kwargs)
        guarded.__name__ = name
        return guarded


    def create_connection(address, *args, **kwargs):
        if not loopback(address[0]):
            record("create_connection", address)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"network blocked by the test: {address!r}")
        return _real["create_connection"](address, *args, **kwargs)


    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, _name, _lookup(_name))
    socket.create_connection = create_connection
    GUARDED = True
    record("loaded", None)
''')

# Runs in a plain host Python with the guard: checks the guard is installed BEFORE any call that could send.
SELF_TEST = textwrap.dedent('''
    import socket, sitecustomize
    assert sitecustomize.GUARDED and socket.socket.connect is sitecustomize.connect
    assert socket.getaddrinfo.__module__ == "sitecustomize"
    assert socket.create_connection is sitecustomize.create_connection
    refused = []
    for attempt in (lambda: socket.socket().connect(("192.0.2.1", 9)),  # TEST-NET-1, never routed
                    lambda: socket.create_connection(("192.0.2.1", 9), timeout=1),
                    lambda: socket.getaddrinfo("example.invalid", 80)):
        try:
            attempt()
        except OSError:
            refused.append(True)
    s = socket.socket()
    assert s.connect_ex(("192.0.2.1", 9)) != 0
    s.close()
    print(len(refused))
''')


def guard_env(root):
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    record = root / "network_attempts.jsonl"
    record.touch()
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "IPAKIT_NET_RECORD": str(record)}, record


def attempts(record, pid=None):
    """(guard loaded in pid?, recorded non-loopback attempts)."""
    lines = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    loaded = any(entry["kind"] == "loaded" and (pid is None or entry["pid"] == pid) for entry in lines)
    return loaded, [entry for entry in lines if entry["kind"] != "loaded"]


def test_the_guard_refuses_and_records_without_sending(tmp_path):
    env, record = guard_env(tmp_path)
    result = subprocess.run([host_python(), "-c", SELF_TEST], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "3", result.stderr
    loaded, seen = attempts(record)
    assert loaded and [entry["kind"] for entry in seen] == ["connect", "create_connection", "getaddrinfo",
                                                            "connect_ex"]


@pytest.fixture(scope="module")
def offline(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("no_network")
    env, record = guard_env(root)
    with dedicated_server(world, root / "server", env=env) as server:
        loaded, _ = attempts(record, server.process.pid)
        assert loaded, "the network guard is not active in the server process"
        yield server, record, server.get("/object_info")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_with_loopback_only(offline, path):
    server, record, object_info = offline
    prompt = to_api(small(json.loads(pathlib.Path(path).read_text()), object_info), object_info)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    assert server.output_images(entry)
    _, seen = attempts(record)
    assert seen == [], json.dumps(seen, indent=1)[:4000]


def test_nothing_tried_to_leave_the_machine(offline):
    server, record, _ = offline
    assert server.process.poll() is None
    _, seen = attempts(record)
    assert seen == [], json.dumps(seen, indent=1)[:4000]
