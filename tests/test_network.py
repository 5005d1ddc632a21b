"""Isolation.network against the real kernel: none, host, bridges, joined namespaces.

Only loopback and private test ranges are used: bridges named ``pxt*`` with
subnets in 10.231.0.0/16 (never pyexec0's 10.88.0.0/16), so nothing here
meets a real pyexec0 or any outside address. Traffic is TCP from Python in
the tasks (``/usr/bin/python3``; the default task root mirrors the host's
/usr). Besides the autouse leak check (processes, mounts, cgroups and
/run/pyexec entries, which include the address leases), every test checks
that no bridge, veth, lease or address of its own outlived it.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from conftest import caller_launches, kill_caller, wait_for
from pyexec import Bridge, ExecCommand, Isolation, network, reattach
from pyexec.errors import ConfigError, LaunchError
from pyexec.netlink import netlink_socket_in

pytestmark = pytest.mark.needs_root(reason="network namespaces, bridges and veths need root")

PY = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent
SUBNET = "10.231.0.0/24"
PORT = 5555

SERVE = f"""
import socket, sys
n = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))
s.listen(8)
print("ready", flush=True)
for _ in range(n):
    c, peer = s.accept()
    data = c.recv(100)
    c.sendall(b"pong:" + data)
    c.close()
    print("from", peer[0], data.decode(), flush=True)
"""

CONNECT = """
import errno, socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    if sys.argv[3] == "-":     # only connect
        print("connected", flush=True)
        sys.exit(0)
    c.sendall(sys.argv[3].encode())
    print(c.recv(100).decode(), flush=True)
except OSError as exc:
    print("error", errno.errorcode.get(exc.errno, exc.errno), flush=True)
"""

IFACES = "import socket; print(' '.join(sorted(name for _, name in socket.if_nameindex())))"


# -- helpers ----------------------------------------------------------------------

def bridge_name(tag: str) -> str:
    return f"pxt{tag}{os.getpid() % 10000}"[:15]


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def pyexec_veths() -> set:
    with IPRoute() as ipr:
        return {link.get("ifname") for link in ipr.get_links()
                if network._VETH_RE.match(link.get("ifname") or "")}


def host_addresses_in(subnet: str) -> list:
    net = ipaddress.IPv4Network(subnet)
    with IPRoute() as ipr:
        return [a.get("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)
                if ipaddress.IPv4Address(a.get("IFA_ADDRESS")) in net]


def assert_no_network_left(bridge: str, subnet: str = SUBNET, veths_before: set = frozenset()) -> None:
    assert not link_exists(bridge), f"bridge {bridge} is left"
    assert pyexec_veths() <= set(veths_before), "a veth is left"
    assert host_addresses_in(subnet) == [], "an address is left"
    assert not os.path.exists(os.path.join(network.IPAM_ROOT, bridge)), "leases are left"


@pytest.fixture
def clean_bridge():
    """Names a fresh test bridge; fails the test if anything of it outlives it."""
    made = []
    before = pyexec_veths()

    def make(tag: str = "b") -> str:
        name = bridge_name(tag)
        assert not link_exists(name)
        made.append(name)
        return name

    yield make
    for name in made:
        assert_no_network_left(name, veths_before=before)


@pytest.fixture
def executors(clean_bridge):
    """conftest's factory, but shut down before ``clean_bridge`` checks (it is set up first)."""
    from pyexec import new_executor
    made = []

    def make(**options):
        ex = new_executor("container", **options)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(grace=0)


def launch(executors, tmp_path, argv, name="task", **isolation):
    out = tmp_path / f"{name}.out"
    cmd = ExecCommand(argv=list(argv), task_dir=str(tmp_path / name), name=name, stdout_path=str(out),
                      stderr_path=str(tmp_path / f"{name}.err"), isolation=Isolation(**isolation))
    ex = executors()
    ex.launch(cmd)
    return ex, out


def output(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def finished(ex, out: Path) -> str:
    result = ex.wait(timeout=30)
    assert result.exit_code == 0, (result, output(out), output(out.with_suffix(".err")))
    return output(out)


# -- none and host ------------------------------------------------------------------

def test_none_is_the_default_with_only_lo_up_for_ipv4_and_ipv6(executors, tmp_path):
    assert Isolation().network == "none" and "net" in Isolation().namespaces
    script = IFACES + """
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(family); s.bind((host, 0)); s.listen(1)
    c = socket.create_connection((host, s.getsockname()[1]), timeout=5)
    a, _ = s.accept(); c.sendall(b"x"); print(host, a.recv(1).decode())
"""
    ex, out = launch(executors, tmp_path, [PY, "-c", script])
    assert finished(ex, out).split("\n") == ["lo", "127.0.0.1 x", "::1 x", ""]
    assert ex.network_info() is None


def test_host_shares_the_hosts_network(executors, tmp_path):
    iso = Isolation(network="host")
    assert "net" not in iso.namespaces
    ex, out = launch(executors, tmp_path, [PY, "-c", IFACES], network="host")
    assert finished(ex, out).split() == sorted(name for _, name in socket.if_nameindex())


def test_namespaces_without_net_still_mean_the_host_network():
    iso = Isolation(namespaces=frozenset({"pid", "mnt"}))
    assert iso.network == "host" and "net" not in iso.namespaces
    assert "net" in Isolation(namespaces=frozenset({"pid"}), network=Bridge(subnet=SUBNET)).namespaces


# -- bridges ------------------------------------------------------------------------

def test_two_bridge_tasks_talk_through_the_bridge_and_the_host_reaches_them(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    bridge = Bridge(name=br, subnet=SUBNET)
    server, server_out = launch(executors, tmp_path, [PY, "-c", SERVE, "2"], name="server", network=bridge)
    info = server.network_info()
    assert info["bridge"] == br and info["gateway"] == "10.231.0.1" and info["interface"] == "eth0"
    assert ipaddress.IPv4Address(info["ip"]) in ipaddress.IPv4Network(SUBNET)
    assert link_exists(br) and link_exists(info["host_veth"])
    assert host_addresses_in(SUBNET) == ["10.231.0.1"]  # the bridge's gateway address
    wait_for(lambda: "ready" in output(server_out), timeout=10, what="server ready")

    client, client_out = launch(executors, tmp_path, [PY, "-c", CONNECT, info["ip"], str(PORT), "ping"],
                                name="client", network=bridge)
    client_ip = client.network_info()["ip"]
    assert client_ip != info["ip"]
    assert finished(client, client_out) == "pong:ping\n"

    # The host reaches a task through the bridge too (the gateway address is its own).
    with socket.create_connection((info["ip"], PORT), timeout=5) as conn:
        conn.sendall(b"host")
        assert conn.recv(100) == b"pong:host"
    assert finished(server, server_out).splitlines() == ["ready", f"from {client_ip} ping", "from 10.231.0.1 host"]
    for ex in (server, client):
        ex.shutdown(grace=0)
    assert_no_network_left(br)


def test_a_task_on_none_cannot_reach_the_bridge(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    bridge = Bridge(name=br, subnet=SUBNET)
    holder, _ = launch(executors, tmp_path, ["sleep", "60"], name="holder", network=bridge)
    gateway = holder.network_info()["gateway"]
    listener = socket.socket()
    listener.bind((gateway, 0))  # the host listens on the bridge's address
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        on_bridge, bridge_out = launch(executors, tmp_path, [PY, "-c", CONNECT, gateway, str(port), "-"],
                                       name="onbridge", network=bridge)
        assert finished(on_bridge, bridge_out) == "connected\n"
        isolated, none_out = launch(executors, tmp_path, [PY, "-c", CONNECT, gateway, str(port), "-"],
                                    name="isolated", network="none")
        assert finished(isolated, none_out) == "error ENETUNREACH\n"
    finally:
        listener.close()
    holder.shutdown(grace=0)


def test_a_requested_ip_and_a_taken_ip(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    first, _ = launch(executors, tmp_path, ["sleep", "60"], name="first",
                      network=Bridge(name=br, subnet=SUBNET, ip="10.231.0.77"))
    assert first.network_info()["ip"] == "10.231.0.77"
    state_before = sorted(os.listdir("/run/pyexec"))
    second = executors()
    cmd = ExecCommand(argv=["true"], task_dir=str(tmp_path / "second"),
                      isolation=Isolation(network=Bridge(name=br, subnet=SUBNET, ip="10.231.0.77")))
    with pytest.raises(ConfigError, match=r"network.ip: '10.231.0.77' is taken \(task first-"):
        second.launch(cmd)
    assert sorted(os.listdir("/run/pyexec")) == state_before  # refused before anything existed
    # Automatic addresses skip it.
    third, _ = launch(executors, tmp_path, ["sleep", "60"], name="third", network=Bridge(name=br, subnet=SUBNET))
    assert third.network_info()["ip"] not in ("10.231.0.77", "10.231.0.1")
    first.shutdown(grace=0)
    third.shutdown(grace=0)


def test_fifty_bridge_tasks_get_distinct_addresses_and_leave_nothing(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    bridge = Bridge(name=br, subnet=SUBNET)
    veths_before = pyexec_veths()

    def start(i: int):
        return launch(executors, tmp_path, ["sleep", "60"], name=f"t{i}", network=bridge)[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # eight launches at a time share the IPAM
        started = list(pool.map(start, range(50)))
    infos = [ex.network_info() for ex in started]
    assert len({info["ip"] for info in infos}) == 50
    assert len({info["host_veth"] for info in infos}) == 50
    assert all(link_exists(info["host_veth"]) for info in infos)
    assert len([n for n in os.listdir(os.path.join(network.IPAM_ROOT, br)) if n[0].isdigit()]) == 50
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ex: ex.shutdown(grace=0), started))
    assert_no_network_left(br, veths_before=veths_before)


def test_an_existing_bridge_is_used_and_kept(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    with IPRoute() as ipr:
        ipr.link("add", ifname=br, kind="bridge")
    try:
        ex, out = launch(executors, tmp_path, [PY, "-c", IFACES], network=Bridge(name=br, subnet=SUBNET))
        assert finished(ex, out) == "eth0 lo\n"
        ex.shutdown(grace=0)
        assert link_exists(br)                   # not pyexec's: kept
        assert host_addresses_in(SUBNET) == []   # but the gateway address pyexec added is gone
        assert not os.path.exists(os.path.join(network.IPAM_ROOT, br))
    finally:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=br)[0])


def test_a_failed_launch_leaves_no_network(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    ex = executors()
    cmd = ExecCommand(argv=["/no/such/program"], task_dir=str(tmp_path / "t"),
                      isolation=Isolation(network=Bridge(name=br, subnet=SUBNET)))
    with pytest.raises(LaunchError, match="/no/such/program"):
        ex.launch(cmd)
    assert_no_network_left(br)


def test_a_failure_inside_the_task_namespace_undoes_the_veth_and_the_lease(executors, tmp_path, clean_bridge,
                                                                            monkeypatch):
    br = clean_bridge()
    made = []

    def broken(pid):
        made.append(pyexec_veths())
        raise OSError(1, "setns refused (test)")
    monkeypatch.setattr(network, "netlink_socket_in", broken)
    cmd = ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"),
                      isolation=Isolation(network=Bridge(name=br, subnet=SUBNET)))
    with pytest.raises(LaunchError, match=r"network px[0-9a-f]{12}/eth0 10.231.0.\d+: .*setns refused"):
        executors().launch(cmd)
    assert made and made[0] - pyexec_veths()  # the veth existed, and is gone
    assert_no_network_left(br)


def test_bridges_with_a_user_namespace(executors, clean_bridge):
    br = clean_bridge()
    # The task's root is an unprivileged host uid: its task dir's parents must be searchable.
    tmp_path = Path(tempfile.mkdtemp(prefix="pyexec-net-", dir="/var/tmp"))
    tmp_path.chmod(0o755)
    bridge = Bridge(name=br, subnet=SUBNET)
    server, server_out = launch(executors, tmp_path, [PY, "-c", SERVE, "1"], name="server", network=bridge,
                                namespaces=frozenset({"pid", "mnt", "uts", "ipc", "net", "user"}))
    wait_for(lambda: "ready" in output(server_out), timeout=10, what="server ready")
    with socket.create_connection((server.network_info()["ip"], PORT), timeout=5) as conn:
        conn.sendall(b"u")
        assert conn.recv(100) == b"pong:u"
    finished(server, server_out)
    server.shutdown(grace=0)
    shutil.rmtree(tmp_path)


def test_bridge_config_errors_at_launch(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    holder, _ = launch(executors, tmp_path, ["sleep", "60"], name="holder", network=Bridge(name=br, subnet=SUBNET))
    cases = [
        (Bridge(name=br, subnet="10.231.1.0/24"), r"network.subnet: '10.231.1.0/24' differs from 10.231.0.0/24"),
        (Bridge(name="lo", subnet="10.231.2.0/24"),
         r"network.name: 'lo' is an existing interface that is not a bridge"),
        (Bridge(name=bridge_name("x"), subnet="10.231.0.0/16"),
         r"network.subnet: '10.231.0.0/16' holds 10.231.0.1, an address of interface " + br),
    ]
    for bridge, message in cases:
        cmd = ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"), isolation=Isolation(network=bridge))
        with pytest.raises(ConfigError, match=message):
            executors().launch(cmd)
    assert not link_exists(bridge_name("x"))
    holder.shutdown(grace=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"subnet": "10.231.0.1/24"}, r"network.subnet: '10.231.0.1/24' is not an IPv4 subnet"),
    ({"subnet": "10.231.0.0/33"}, r"network.subnet: '10.231.0.0/33' is not an IPv4 subnet"),
    ({"subnet": "fd00::/64"}, r"network.subnet: 'fd00::/64' is not an IPv4 subnet"),
    ({"subnet": "nonsense"}, r"network.subnet: 'nonsense' is not an IPv4 subnet"),
    ({"subnet": 24}, r"network.subnet: 24 is not an IPv4 subnet"),
    ({"subnet": "10.231.0.0/31"}, r"network.subnet: '10.231.0.0/31' is too small"),
    ({"subnet": "127.0.0.0/8"}, r"network.subnet: '127.0.0.0/8' is not a unicast subnet"),
    ({"subnet": "224.0.0.0/24"}, r"network.subnet: '224.0.0.0/24' is not a unicast subnet"),
    ({"subnet": "169.254.0.0/16"}, r"network.subnet: '169.254.0.0/16' is not a unicast subnet"),
    ({"subnet": SUBNET, "ip": "10.231.1.5"}, r"network.ip: '10.231.1.5' is not a host address of 10.231.0.0/24"),
    ({"subnet": SUBNET, "ip": "10.231.0.255"}, r"network.ip: '10.231.0.255' is not a host address"),
    ({"subnet": SUBNET, "ip": "10.231.0.1"}, r"network.ip: '10.231.0.1' is the gateway"),
    ({"subnet": SUBNET, "ip": "x"}, r"network.ip: 'x' is not an IPv4 address"),
    ({"name": "a-very-long-bridge-name"}, r"network.name: 'a-very-long-bridge-name' is not an interface name"),
    ({"name": "br/0"}, r"network.name: 'br/0' is not an interface name"),
])
def test_bad_bridges_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Bridge(**kwargs)


def test_bridge_values_are_normalised():
    bridge = Bridge(subnet=SUBNET, ip="10.231.0.9")
    assert (bridge.gateway, bridge.prefixlen, bridge.ip) == ("10.231.0.1", 24, "10.231.0.9")
    assert Bridge() == Bridge(name="pyexec0", subnet="10.88.0.0/16")


def test_the_subnet_runs_full(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    bridge = Bridge(name=br, subnet="10.231.3.0/30")  # the gateway .1 and one task, .2
    one, _ = launch(executors, tmp_path, ["sleep", "60"], name="one", network=bridge)
    assert one.network_info()["ip"] == "10.231.3.2"
    cmd = ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"), isolation=Isolation(network=bridge))
    with pytest.raises(ConfigError, match="has no free address left"):
        executors().launch(cmd)
    one.shutdown(grace=0)
    assert_no_network_left(br, "10.231.3.0/30")


# -- reattach and stale cleanup ---------------------------------------------------------

def test_the_lease_survives_reattach_and_the_new_caller_releases_it(tmp_path, clean_bridge, subreaper):
    br = clean_bridge()
    caller, handle = caller_launches("container", tmp_path / "task", [PY, "-c", SERVE, "1"], name="reattached",
                                     bridge={"name": br, "subnet": SUBNET, "ip": "10.231.0.50"})
    kill_caller(caller)
    # The caller is gone; its task, address and veth are not.
    assert os.path.exists(os.path.join(network.IPAM_ROOT, br, "10.231.0.50"))
    ex = reattach(handle)
    try:
        info = ex.network_info()
        assert info["ip"] == "10.231.0.50" and link_exists(info["host_veth"])

        def answered():
            try:
                with socket.create_connection(("10.231.0.50", PORT), timeout=1) as conn:
                    conn.sendall(b"again")
                    return conn.recv(100)
            except OSError:
                return None
        assert wait_for(answered, timeout=10, what="the reattached task answers") == b"pong:again"
        assert ex.wait(timeout=10).exit_code == 0
    finally:
        ex.shutdown(grace=0)
    assert_no_network_left(br)


def test_cleanup_stale_reclaims_leases_veths_and_bridges_of_gone_tasks(executors, tmp_path, clean_bridge):
    br = clean_bridge()
    state_dir = tmp_path / "crashed-0123456789ab"
    state_dir.mkdir()
    lease = network.allocate(Bridge(name=br, subnet=SUBNET), "crashed-0123456789ab", str(state_dir))
    with IPRoute() as ipr:  # the crashed caller's veth, still on the host
        ipr.link("add", ifname=lease.veth, kind="veth", peer=lease.veth + "p")
        ipr.link("set", index=ipr.link_lookup(ifname=lease.veth)[0], master=ipr.link_lookup(ifname=br)[0])
        ipr.link("add", ifname="px0123456789ab", kind="veth", peer="pxstraypeer")  # named by no lease
    assert link_exists(br) and link_exists(lease.veth)
    live_dir = tmp_path / "live-0123456789ab"
    live_dir.mkdir()
    live = network.allocate(Bridge(name=br, subnet=SUBNET), "live-0123456789ab", str(live_dir))
    ex = executors()
    assert "crashed-0123456789ab" not in ex.cleanup_stale()  # its state dir still exists: not stale
    assert link_exists(lease.veth)
    assert not link_exists("px0123456789ab")                  # the stray veth went at once
    state_dir.rmdir()                                          # now its caller is really gone
    assert "crashed-0123456789ab" in ex.cleanup_stale()
    assert not link_exists(lease.veth) and not link_exists(lease.veth + "p")
    assert link_exists(br)                                     # the live lease keeps the bridge
    assert network.find_lease("live-0123456789ab") == live
    network.release(live)
    assert_no_network_left(br)


def test_a_stale_lease_is_reclaimed_by_the_next_allocation(tmp_path, clean_bridge):
    br = clean_bridge()
    gone = tmp_path / "gone"
    gone.mkdir()
    old = network.allocate(Bridge(name=br, subnet=SUBNET, ip="10.231.0.9"), "gone-0123456789ab", str(gone))
    gone.rmdir()
    here = tmp_path / "here"
    here.mkdir()
    new = network.allocate(Bridge(name=br, subnet=SUBNET, ip="10.231.0.9"), "here-0123456789ab", str(here))
    assert new.ip == old.ip and network.find_lease("gone-0123456789ab") is None
    network.release(new)
    assert_no_network_left(br)


# -- joining a namespace ----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def test_netns(tmp_path):
    """A network namespace made by the test: a sleeping ``unshare --net``
    holds it, with lo up and a veth pair ``pxtdummy`` (10.231.5.1/24), ``pxtdummyp``;
    also bind-mounted at a file (the "netns:PATH" form). Removed afterwards."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    path = tmp_path / "netns"
    path.touch()
    mounted = False
    try:
        ns_file = f"/proc/{holder.pid}/ns/net"
        wait_for(lambda: os.readlink(ns_file) != os.readlink("/proc/self/ns/net"), what="unshare")
        with IPRoute(fileno=netlink_socket_in(holder.pid)) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="pxtdummy", kind="veth", peer="pxtdummyp")  # no dummy module here
            dummy = ipr.link_lookup(ifname="pxtdummy")[0]
            ipr.addr("add", index=dummy, address="10.231.5.1", prefixlen=24)
            ipr.link("set", index=dummy, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="pxtdummyp")[0], state="up")
        if _libc.mount(ns_file.encode(), str(path).encode(), None, 4096, None) != 0:  # MS_BIND
            raise OSError(ctypes.get_errno(), "bind mount of the namespace")
        mounted = True
        yield {"proc": ns_file, "file": str(path), "pid": holder.pid}
    finally:
        if mounted:
            _libc.umount2(str(path).encode(), 2)  # MNT_DETACH
        holder.kill()
        holder.wait()


def test_a_task_joining_a_namespace_sees_its_interfaces(executors, tmp_path, test_netns):
    for form in ("ns:" + test_netns["proc"], "netns:" + test_netns["file"]):
        iso = Isolation(network=form)
        assert "net" not in iso.namespaces
        ex, out = launch(executors, tmp_path, [PY, "-c", IFACES], name=f"j{len(form)}", network=form)
        assert finished(ex, out) == "lo pxtdummy pxtdummyp\n"
        ex.shutdown(grace=0)


def test_tasks_joining_one_namespace_share_it(executors, tmp_path, test_netns):
    form = "ns:" + test_netns["proc"]
    server, server_out = launch(executors, tmp_path, [PY, "-c", SERVE, "2"], name="server", network=form)
    wait_for(lambda: "ready" in output(server_out), timeout=10, what="server ready")
    for name, host in (("c1", "127.0.0.1"), ("c2", "10.231.5.1")):
        client, client_out = launch(executors, tmp_path, [PY, "-c", CONNECT, host, str(PORT), name],
                                    name=name, network=form)
        assert finished(client, client_out) == f"pong:{name}\n"
    # The host itself is outside: it has no 10.231.5.0/24.
    assert host_addresses_in("10.231.5.0/24") == []
    finished(server, server_out)


def test_joining_errors(tmp_path, test_netns):
    regular = tmp_path / "file"
    regular.write_text("")
    cases = [
        ("netns:/var/run/netns/pyexec-no-such-ns", "does not exist"),
        ("netns:pyexec-no-such-ns", "does not exist"),
        ("ns:/proc/999999999/ns/net", "does not exist"),
        ("ns:relative/path", "must name an absolute path"),
        ("ns:", "must name an absolute path"),
        (f"netns:{regular}", "is not a network namespace file"),
        ("ns:/proc/self/ns/pid", "is not a network namespace file"),
        ("bridge", "must be 'none', 'host', a Bridge"),
        (None, "must be 'none', 'host', a Bridge"),
    ]
    for value, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            Isolation(network=value)
        assert info.value.field == "network" and info.value.value == value
    with pytest.raises(ConfigError, match="cannot be joined from a new user namespace"):
        Isolation(network="ns:" + test_netns["proc"], namespaces=frozenset({"pid", "mnt", "user"}))


def test_a_namespace_removed_before_launch_is_a_config_error(executors, tmp_path):
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    try:
        ns_file = f"/proc/{holder.pid}/ns/net"
        wait_for(lambda: os.readlink(ns_file) != os.readlink("/proc/self/ns/net"), what="unshare")
        cmd = ExecCommand(argv=["true"], task_dir=str(tmp_path / "t"), isolation=Isolation(network="ns:" + ns_file))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with pytest.raises(ConfigError, match="cannot be opened"):
        executors().launch(cmd)


def test_cli_net_option_maps_to_network():
    from pyexec.cli import parse_network
    assert parse_network("none") == "none" and parse_network("host") == "host"
    assert parse_network("bridge") == Bridge()
    assert parse_network("bridge:br9") == Bridge(name="br9")
    assert parse_network("bridge:br9:10.231.0.0/24") == Bridge(name="br9", subnet=SUBNET)
    assert parse_network("bridge:br9:10.231.0.0/24:10.231.0.7") == Bridge(name="br9", subnet=SUBNET, ip="10.231.0.7")
    assert parse_network("netns:/x") == "netns:/x"
    with pytest.raises(ConfigError, match="is not bridge"):
        parse_network("bridge::10.231.0.0/24")


def test_cli_runs_a_bridge_task(tmp_path, clean_bridge):
    br = clean_bridge()
    done = subprocess.run([sys.executable, "-m", "pyexec", "run", "--net", f"bridge:{br}:{SUBNET}:10.231.0.33",
                           "--", PY, "-c", IFACES + "; print(open('/proc/net/route').read().split()[11:13])"],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["eth0 lo", "['eth0', '00000000']"]
    assert_no_network_left(br)
