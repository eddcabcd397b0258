"""The operator commands: ``status``, ``cleanup``, ``check``, ``emulator``, ``--help``.

``status`` and ``cleanup`` are checked against a namespace made by a Helper in another process,
both while that process is attached and after it exited; ``check`` against the emulator. Every
user mistake must give one line on stderr and exit status 2, never a traceback; every command
runs with the loopback guard, so an example address in a test can never reach a network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from alternator_shm import __version__
from alternator_shm.cli import build_parser
from alternator_shm.cli.status import leader_process
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup, list_fleets

pytestmark = pytest.mark.timeout(60)

CALLS = 6

# A worker that makes CALLS calls, reports, then stays attached until its stdin closes.
_WORKER = textwrap.dedent(
    """
    import json, sys
    from alternator_shm import Helper
    seeds, port, key, secret, ns = sys.argv[1].split(","), int(sys.argv[2]), *sys.argv[3:6]
    h = Helper(seeds, port=port, credentials=(key, secret), namespace=ns,
               refresh_interval=0.3)
    ddb = h.new_dynamodb_client()
    for i in range(CALLS):
        ddb.get_item(TableName="t", Key={"p": {"S": str(i)}})
    h.update_live_nodes()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    h.close()
    """
).replace("CALLS", str(CALLS))


GUARD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loopback_guard")


def _env(*first: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*first, GUARD_DIR, *filter(None, [
        env.get("PYTHONPATH")])])
    return env


def _cli(*args: str, timeout: float = 30,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alternator_shm", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env or _env())


def _usage_error(out: subprocess.CompletedProcess[str]) -> str:
    """Assert the shape of a user error; return its one line."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    topology = [("dc1", "rack1"), ("dc1", "rack2"), ("dc1", "rack1")]
    with Cluster(nodes=3, topology=topology, users={"cli": "cli-secret"},
                 backend="null") as c:
        yield c


@pytest.fixture
def namespace() -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex}"
    yield ns
    cleanup(ns)


def _start_worker(cluster: Cluster, namespace: str) -> subprocess.Popen[str]:
    key, secret = cluster.credentials
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, ",".join(cluster.seeds), str(cluster.port), key,
         secret, namespace],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"worker failed: {proc.communicate(timeout=10)[1][-3000:]}")
    assert json.loads(line) == {"ready": True}
    return proc


def _stop_worker(proc: subprocess.Popen[str]) -> None:
    try:
        proc.communicate(input="\n", timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _status(namespace: str) -> dict[str, Any] | None:
    out = _cli("status", "--json", "--namespace", namespace)
    if out.returncode == 2 and "no shared state for namespace" in out.stderr:
        return None
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert all(e["namespace"] == namespace for e in entries)
    return entries[0] if entries else None


def test_status_shows_a_namespace_while_attached_and_after_exit(
    cluster: Cluster, namespace: str
) -> None:
    proc = _start_worker(cluster, namespace)
    try:
        live = _status(namespace)
        assert live is not None
        assert live["leader_pid"] == proc.pid
        assert live["generation"] >= 1
        assert sorted(live["nodes"]) == sorted(n.url for n in cluster.nodes)
        assert live["picks"] == CALLS
        per_node = {url: v["picks"] for url, v in live["per_node"].items()}
        assert sorted(per_node.values()) == [CALLS // 3] * 3
        assert not any(v["quarantined"] for v in live["per_node"].values())
        prom = _cli("status", "--format", "prometheus", "--namespace", namespace)
        assert prom.returncode == 0, prom.stderr
        assert f'alternator_shm_table_generation{{namespace="{namespace}"}}' in prom.stdout
        human = _cli("status", "--namespace", namespace)
        assert human.returncode == 0
        assert namespace in human.stdout and str(proc.pid) in human.stdout
        # The leader's process, as the process table names it, with its start time.
        assert f"leader pid {proc.pid} python" in human.stdout and "started" in human.stdout
        assert live["leader_process"]["pid"] == proc.pid
        assert live["leader_process"]["reused"] is False
        for node in cluster.nodes:
            assert node.url in human.stdout
    finally:
        _stop_worker(proc)
    assert proc.returncode == 0
    # Nobody is attached any more; the table and counters are still readable.
    after = _status(namespace)
    assert after is not None
    assert after["leader_pid"] in (None, proc.pid)  # never a live impostor
    assert after["generation"] == live["generation"]
    assert after["picks"] == CALLS
    assert sorted(after["nodes"]) == sorted(live["nodes"])


def test_cleanup_removes_only_unused_state(cluster: Cluster, namespace: str) -> None:
    proc = _start_worker(cluster, namespace)
    try:
        kept = _cli("cleanup", "--namespace", namespace)
        assert kept.returncode == 1  # named on the command line, and not removed
        assert kept.stdout.startswith("kept (a process is attached)") and namespace in kept.stdout
        assert _status(namespace) is not None, "cleanup removed a segment in use"
        # The attached worker still routes through its shared table.
        assert _status(namespace)["picks"] == CALLS  # type: ignore[index]
    finally:
        _stop_worker(proc)
    # A bare cleanup removes nothing: it lists the namespaces and asks which.
    bare = _cli("cleanup")
    assert "--namespace NS" in _usage_error(bare) and namespace in bare.stdout
    assert _status(namespace) is not None
    removed = _cli("cleanup", "--namespace", namespace)
    assert removed.returncode == 0
    assert removed.stdout.startswith("removed") and namespace in removed.stdout
    assert _status(namespace) is None
    # Gone now: naming it again is a mistake, said so (not a silent success).
    assert namespace in _usage_error(_cli("cleanup", "--namespace", namespace))


def test_cleanup_all_lists_what_it_removes(cluster: Cluster, tmp_path: Any) -> None:
    shm = str(tmp_path)
    empty = _cli("cleanup", "--all", "--shm-dir", shm)
    assert empty.returncode == 0 and "no shared alternator-shm state" in empty.stdout
    ns = f"t-{uuid.uuid4().hex}"
    # Another process makes the segment and exits (this one must not stay attached).
    subprocess.run([sys.executable, "-c",
                    "import sys; from alternator_shm.fleet import SharedFleet; "
                    "f = SharedFleet(sys.argv[1], shm_dir=sys.argv[2]); f.advance(); f.close()",
                    ns, shm], check=True, timeout=30, env=_env())
    out = _cli("cleanup", "--all", "--shm-dir", shm)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("removed: " + ns), out.stdout
    assert list_fleets(shm) == []


def test_status_when_nothing_matches(tmp_path: Any) -> None:
    out = _cli("status", "--shm-dir", str(tmp_path))
    assert out.returncode == 0
    assert "no shared alternator-shm state" in out.stdout
    js = _cli("status", "--json", "--shm-dir", str(tmp_path))
    assert json.loads(js.stdout) == []
    typo = f"t-none-{uuid.uuid4().hex}"
    assert typo in _usage_error(_cli("status", "--namespace", typo))
    assert typo in _usage_error(_cli("status", "--json", "--namespace", typo))


def test_check_good_and_bad_datacenter(cluster: Cluster) -> None:
    seed = cluster.seeds[0]
    good = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1", "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["scope_ok"] is True
    assert report["rack_datacenter_feature_supported"] is True
    assert sorted(report["live_nodes"]) == sorted(n.url for n in cluster.nodes)

    rack = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1", "--rack", "rack2")
    assert rack.returncode == 0, rack.stdout
    assert "OK" in rack.stdout

    bad = _cli("check", seed, "--port", str(cluster.port), "--dc", "nosuchdc")
    assert bad.returncode != 0
    assert "nosuchdc" in bad.stdout

    bad_rack = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1",
                    "--rack", "nosuchrack", "--json")
    assert bad_rack.returncode != 0
    assert json.loads(bad_rack.stdout)["scope_ok"] is False


def test_check_unreachable_node() -> None:
    # A loopback address with nothing listening: refused at once. Nothing is reported fine.
    out = _cli("check", "127.0.0.1", "--port", "9", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["live_nodes"] == [] and report["ok"] is False
    assert report["scope_ok"] is None  # unknown, not "fine"
    for scope in ([], ["--dc", "dc1"], ["--dc", "dc1", "--rack", "rack1"]):
        human = _cli("check", "127.0.0.1", "--port", "9", *scope)
        assert human.returncode == 1
        assert "scope populated  unknown" in human.stdout and "PROBLEMS FOUND" in human.stdout


def test_check_https_against_plain_http_is_a_tls_error(cluster: Cluster) -> None:
    out = _cli("check", cluster.seeds[0], "--port", str(cluster.port), "--scheme", "https")
    assert out.returncode == 1
    assert "WRONG_VERSION_NUMBER" in out.stdout and "--scheme http" in out.stdout, out.stdout
    assert "timed out" not in out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check", "http://10.0.0.1"], "10.0.0.1 --scheme http"),
        (["check", "https://10.0.0.1:8000/x"], "10.0.0.1 --scheme https"),
        (["check", "10.0.0.1:8000"], "10.0.0.1 --port 8000"),
        (["check", "127.0.0.1", "--port", "70000"], "between 1 and 65535"),
        (["check", "127.0.0.1", "--port", "http"], "expected an integer"),
        (["check", "bad_host!"], "not a host name or IP"),
        (["check", "127.0.0.1", "--scheme", "ftp"], "invalid choice"),
        (["check"], "required"),
        (["emulator", "--enforce-auth", "KEY"], "KEY:SECRET"),
        (["emulator", "--enforce-auth", "KEY:"], "KEY:SECRET"),
        (["emulator", "--nodes", "0"], "between 1 and 254"),
        (["emulator", "--nodes", "-3"], "between 1 and 254"),
        (["emulator", "--nodes", "2", "--dc", "dc1:1"], "not allowed with argument --nodes"),
        (["emulator", "--dc", "dc1:0"], "DC:COUNT"),
        (["emulator", "--port", "99999"], "between 1 and 65535"),
        (["emulator", "--failure-detect-delay", "-1"], "between 0 and 3600"),
        (["emulator", "--profile", "7.0"], "invalid choice"),
        (["demo", "--workers", "0"], "between 1 and 64"),
        (["demo", "--duration", "-1"], "between 1 and 3600"),
        (["demo", "--backend", "dynamodb-local"], "invalid choice"),
        (["status", "--bogus"], "unrecognized arguments"),
        (["cleanup", "--all", "--namespace", "x"], "not allowed with argument"),
        (["stauts"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], expected: str) -> None:
    line = _usage_error(_cli(*args))
    assert expected in line, line


def test_broken_pipe_is_quiet(tmp_path: Any) -> None:
    # ``status | head -1``: the reader is gone before the command writes.
    for args in (["status", "--shm-dir", str(tmp_path)], ["--help"], ["status", "--json"]):
        proc = subprocess.Popen([sys.executable, "-m", "alternator_shm", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=_env())
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.stderr.close()
        proc.wait(timeout=30)
        assert err == "", (args, err)


def test_every_option_has_help_and_no_developer_note() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions
                      if isinstance(a, type(parser._subparsers._group_actions[0])))  # type: ignore[union-attr]
    commands = subparsers.choices  # type: ignore[attr-defined]
    assert set(commands) == {"demo", "emulator", "status", "check", "cleanup"}
    for name, sub in [("", parser), *commands.items()]:
        for action in sub._actions:
            assert action.help and action.help != "==SUPPRESS==", (name, action.dest)
    top = _cli("--help").stdout
    for note in ("module", "argparse", "import", "configure"):
        assert note not in top, top


def test_emulator_command_runs_and_stops_on_sigterm() -> None:
    text, out, code = _run_emulator("--dc", "dc1:2", "--dc", "dc2:1", "--enforce-auth", "k:s",
                                    "--profile", "6.0")
    assert "3 nodes in 2 datacenters" in text and "profile 6.0" in text, text
    assert text.count("dc=dc1") == 2 and text.count("dc=dc2") == 1
    assert "credentials: k:s (enforced)" in text
    assert code == 0 and "stopped" in out


def test_missing_emulator_extra_names_the_install_command(tmp_path: Any) -> None:
    # A module named moto that fails to import the way an absent package does.
    (tmp_path / "moto.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'moto'\", name='moto')\n")
    env = _env(str(tmp_path))
    for command in ("demo", "emulator"):
        line = _usage_error(_cli(command, env=env))
        assert f"alternator-shm {command} needs moto" in line, line
        assert "pip install 'alternator-shm[emulator]'" in line, line
    # The fixture: one line naming the same command, not a ModuleNotFoundError traceback.
    (tmp_path / "test_uses_fixture.py").write_text(
        "def test_it(alternator_cluster):\n    pass\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(tmp_path / "test_uses_fixture.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1, out.stdout
    assert "the alternator_cluster fixture needs moto" in out.stdout, out.stdout
    assert "pip install 'alternator-shm[emulator]'" in out.stdout
    assert "ModuleNotFoundError" not in out.stdout


def test_leader_process_names_the_process_and_notices_a_reused_pid() -> None:
    from alternator_shm.fleet import FleetStats

    fresh = FleetStats("t-x", "/x", os.getpid(), 1, (), 0, leader_since_age_s=0.0)
    info = leader_process(fresh)
    assert info is not None and info.name and info.started and not info.reused
    assert "started" in info.describe()
    # The pid's process started long after this "leadership" began: someone else's pid now.
    old = dataclasses.replace(fresh, leader_since_age_s=10 * 86400.0)
    reused = leader_process(old)
    assert reused is not None and reused.reused and "REUSED" in reused.describe()


def test_help_and_version() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("demo", "emulator", "status", "check", "cleanup"):
        assert command in out.stdout
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"alternator-shm {__version__}"
    for command in ("demo", "status", "check", "cleanup"):
        sub = _cli(command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
        assert "usage:" in sub.stdout


def test_console_script_matches_module() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "alternator-shm")
    if not os.path.exists(exe):
        pytest.skip("console script not installed next to this interpreter")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == f"alternator-shm {__version__}"


# --------------------------------------------------------------------------- new-user trial
# Each test below reproduces one finding of a new user's first session with the commands.


def _make_segment(namespace: str, shm: str, *, stay: bool = False) -> subprocess.Popen[str]:
    """A segment made by another process; with ``stay`` it stays attached until stdin closes."""
    code = ("import sys; from alternator_shm.fleet import SharedFleet; "
            "f = SharedFleet(sys.argv[1], shm_dir=sys.argv[2]); f.advance(); "
            "print('ready', flush=True); sys.stdin.readline() if sys.argv[3] == '1' else None; "
            "f.close()")
    proc = subprocess.Popen([sys.executable, "-c", code, namespace, shm, "1" if stay else "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    if not stay:
        assert proc.wait(30) == 0
    return proc


def _smash_magic(shm: str, namespace: str) -> str:
    """Corrupt the header of ``namespace``'s segment; returns its name as status prints it."""
    from alternator_shm.fleet import layout, segment

    base = segment.base_name(namespace)
    with open(os.path.join(shm, base), "r+b") as f:
        f.seek(layout.MAGIC_OFF)
        f.write(b"\xee" * 8)
    return "/" + base


def _foreign(shm: str, digest: str, size: int | None = None, fill: bytes = b"\0") -> str:
    """A file under our name pattern that is not our format (another version, a stray copy)."""
    from alternator_shm.fleet import layout

    base = f"rrlb{layout.LAYOUT_VERSION}.{os.geteuid()}.{digest}"
    with open(os.path.join(shm, base), "wb") as f:
        f.write(b"NOT-OURS" + fill * ((size or layout.TOTAL_SIZE) - 8))
    return "/" + base


def _status_json(shm: str) -> list[dict[str, Any]]:
    out = _cli("status", "--json", "--shm-dir", shm)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_cleanup_removes_exactly_the_unusable_segment_status_shows(tmp_path: Any) -> None:
    shm = str(tmp_path)
    ns = f"t-{uuid.uuid4().hex}"
    _make_segment(ns, shm)
    corrupt = _smash_magic(shm, ns)
    foreign = _foreign(shm, "0123456789")
    truncated = _foreign(shm, "abcdefabcd", size=4096)
    garbage = _foreign(shm, "fedcbafedc", fill=b"\xab")  # no namespace can be read back
    healthy_ns = f"t-{uuid.uuid4().hex}"
    _make_segment(healthy_ns, shm)
    shown = {e["segment_name"]: e for e in _status_json(shm)}
    assert shown[corrupt]["namespace"] == ns and shown[corrupt]["problem"]
    assert shown[foreign]["namespace"] == "" and shown[truncated]["namespace"] == ""
    assert shown[garbage]["namespace"] == ""  # not the bytes' mojibake
    assert "\ufffd" not in _cli("status", "--shm-dir", shm).stdout
    text = _cli("status", "--shm-dir", shm).stdout
    # The hint names a command that removes that very segment.
    assert f"alternator-shm cleanup --segment {foreign}" in text, text
    # By the namespace status shows (the header's, although the header is corrupt).
    out = _cli("cleanup", "--namespace", ns, "--shm-dir", shm)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("removed") and corrupt in out.stdout, out.stdout
    assert "attached" not in out.stdout
    # The empty name names two segments here: refused, naming both and how to pick one.
    line = _usage_error(_cli("cleanup", "--namespace", "", "--shm-dir", shm))
    assert foreign in line and truncated in line and "--segment" in line, line
    # By the segment name status prints (with or without the slash, or as a path).
    out = _cli("cleanup", "--segment", foreign, "--segment", truncated[1:],
               "--segment", os.path.join(shm, garbage[1:]), "--shm-dir", shm)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("removed") == 3, out.stdout
    assert [e["namespace"] for e in _status_json(shm)] == [healthy_ns]
    # A name that is not one of this user's segments is refused, never unlinked.
    stray = tmp_path / "stray"
    stray.write_text("x")
    line = _usage_error(_cli("cleanup", "--segment", str(stray), "--shm-dir", shm))
    assert "stray" in line and stray.exists()


def test_cleanup_refuses_an_unusable_segment_only_while_attached(tmp_path: Any) -> None:
    shm = str(tmp_path)
    ns = f"t-{uuid.uuid4().hex}"
    proc = _make_segment(ns, shm, stay=True)
    try:
        name = _smash_magic(shm, ns)
        kept = _cli("cleanup", "--segment", name, "--shm-dir", shm)
        assert kept.returncode == 1, kept.stdout + kept.stderr  # asked for, not done
        assert kept.stdout.startswith("kept") and "a process is attached" in kept.stdout
        assert os.path.exists(os.path.join(shm, name[1:]))
    finally:
        _stop_worker(proc)
    out = _cli("cleanup", "--namespace", ns, "--shm-dir", shm)
    assert out.returncode == 0 and out.stdout.startswith("removed"), out.stdout + out.stderr
    assert not os.path.exists(os.path.join(shm, name[1:]))


def test_unknown_namespace_lists_the_known_ones_readably(tmp_path: Any) -> None:
    shm = str(tmp_path)
    for command in ("status", "cleanup"):
        line = _usage_error(_cli(command, "--namespace", "nope", "--shm-dir", shm))
        assert line.endswith("(namespaces: none)"), line
    ns = f"t-{uuid.uuid4().hex}"
    _make_segment(ns, shm)
    foreign = _foreign(shm, "0123456789")
    for command in ("status", "cleanup"):
        line = _usage_error(_cli(command, "--namespace", "nope", "--shm-dir", shm))
        assert "''" not in line and ": ," not in line and ", ," not in line, line
        assert f"namespaces: {ns}" in line and foreign in line, line


def _with_closed_stdout(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run a command whose reader went away before it wrote (``... | head -0``)."""
    proc = subprocess.Popen([sys.executable, "-m", "alternator_shm", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    try:
        err = proc.stderr.read().decode()
        proc.stderr.close()
        return proc.wait(timeout=timeout), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


SIGPIPE_STATUS = 128 + signal.SIGPIPE


def test_closed_stdout_ends_every_printing_command_quietly(tmp_path: Any) -> None:
    shm = str(tmp_path)
    _make_segment(f"t-{uuid.uuid4().hex}", shm)
    for args in (
        ["status", "--shm-dir", shm], ["status", "--json", "--shm-dir", shm],
        ["status", "--format", "prometheus", "--shm-dir", shm],
        ["status", "--watch", "--iterations", "3", "--interval", "0.1", "--shm-dir", shm],
        ["cleanup", "--shm-dir", shm],
        ["check", "127.0.0.1", "--port", "9"],
        ["emulator", "--backend", "null", "--nodes", "1"],
        ["--help"], ["status", "--help"], ["--version"],
    ):
        status, err = _with_closed_stdout(*args)
        assert (status, err) == (SIGPIPE_STATUS, ""), args


def test_closed_stdout_ends_the_demo_quietly() -> None:
    status, err = _with_closed_stdout("demo", "--backend", "null", "--duration", "2",
                                      "--workers", "1", timeout=80)
    assert (status, err) == (SIGPIPE_STATUS, "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status", "--iterations", "3"], "--iterations is for --watch"),
        (["status", "--interval", "2"], "--interval is for --watch"),
        (["status", "--watch", "--json"], "--watch shows text"),
        (["status", "--watch", "--format", "prometheus"], "--watch shows text"),
        (["status", "--watch", "--iterations", "0"], "between 1 and"),
    ],
)
def test_status_refuses_options_it_would_ignore(args: list[str], expected: str) -> None:
    line = _usage_error(_cli(*args))
    assert line.startswith("alternator-shm status: error: ") and expected in line, line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["127.0.0.1", "--insecure"], "--insecure is for https"),
        (["127.0.0.1", "--ca-file", "/etc/hostname"], "--ca-file is for https"),
        (["127.0.0.1", "--no-fallback"], "--no-fallback needs --dc or --rack"),
    ],
)
def test_check_refuses_options_it_would_ignore(args: list[str], expected: str) -> None:
    line = _usage_error(_cli("check", *args))
    assert line.startswith("alternator-shm check: error: ") and expected in line, line


@pytest.mark.parametrize(
    "args",
    [["status", "--bogus"], ["cleanup", "--bogus"], ["demo", "--bogus"],
     ["emulator", "--bogus"], ["check", "127.0.0.1", "--bogus"],
     ["status", "extra-word"]],
)
def test_errors_after_a_command_name_that_command(args: list[str]) -> None:
    line = _usage_error(_cli(*args))
    command = args[0]
    assert line.startswith(f"alternator-shm {command}: error: unrecognized arguments"), line
    assert f"see 'alternator-shm {command} --help'" in line, line


def test_errors_before_a_command_name_the_program() -> None:
    line = _usage_error(_cli("--bogus", "status"))
    assert line.startswith("alternator-shm: error: "), line


# (command, option, lowest, highest, integer?) for every numeric option of every command.
NUMERIC_OPTIONS = [
    ("demo", "--workers", 1, 64, True),
    ("demo", "--duration", 1, 3600, False),
    ("demo", "--refresh-interval", 0.05, 60, False),
    ("status", "--interval", 0.1, 3600, False),
    ("status", "--iterations", 1, 1_000_000, True),
    ("check", "--port", 1, 65535, True),
    ("emulator", "--port", 1, 65535, True),
    ("emulator", "--nodes", 1, 254, True),
    ("emulator", "--failure-detect-delay", 0, 3600, False),
]


def _bad_values(low: float, high: float, integer: bool) -> list[str]:
    below = low - 1 if integer else low / 2 if low > 0 else -1
    values = [str(below), str(high + 1), "x", "nan", "inf", ""]
    return values + (["1.5", "2e3"] if integer else [])


@pytest.mark.parametrize(("command", "option", "low", "high", "integer"), NUMERIC_OPTIONS)
def test_each_numeric_option_has_its_own_bounds_and_message(
    command: str, option: str, low: float, high: float, integer: bool
) -> None:
    parser = build_parser(command)
    sub = parser.commands[command]
    [action] = [a for a in sub._actions if option in a.option_strings]
    kind = "an integer" if integer else "a number of seconds"
    for value in _bad_values(low, high, integer):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            action.type(value)  # type: ignore[misc, operator]
        message = str(info.value)
        assert message.startswith(f"expected {kind} ") and message.endswith(f", got {value!r}")
        assert (str(high) if integer else f"{high:g}") in message, message
    def text(x: float) -> str:
        return str(x) if integer else f"{x:g}"

    assert action.type(text(low)) == low and action.type(text(high)) == high  # type: ignore[misc, operator]
    # The same text reaches the user, one line, naming the command.
    line = _usage_error(_cli(command, option, "1.5" if integer else "x"))
    assert line.startswith(f"alternator-shm {command}: error: argument {option}: expected"), line


def test_no_numeric_option_is_left_without_bounds() -> None:
    """Every option whose type is not a plain string is in NUMERIC_OPTIONS (or a known
    non-numeric parser), so a new option cannot come back with copied limits."""
    known = {(c, o) for c, o, *_ in NUMERIC_OPTIONS}
    non_numeric = {("check", "nodes"), ("emulator", "--dc"), ("emulator", "--enforce-auth")}
    parser = build_parser()
    for name, sub in parser.commands.items():
        for action in sub._actions:
            if action.type is None or action.type is str:
                continue
            label = action.option_strings[0] if action.option_strings else action.dest
            assert (name, label) in known | non_numeric, (name, label)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["emulator", "--dc", "dc1:1.5"], "expected DC:COUNT with COUNT an integer between 1 "
                                          "and 254, got 'dc1:1.5'"),
        (["emulator", "--dc", "dc1:255"], "between 1 and 254"),
        (["emulator", "--dc", "dc1:200", "--dc", "dc2:100"], "at most 254 nodes"),
        (["emulator", "--dc", "dc1:2", "--dc", "dc1:1"], "dc1 is given twice"),
    ],
)
def test_emulator_topology_errors(args: list[str], expected: str) -> None:
    line = _usage_error(_cli(*args))
    assert line.startswith("alternator-shm emulator: error: ") and expected in line, line


def _run_emulator(*args: str) -> tuple[str, str, int]:
    """Start ``alternator-shm emulator`` (null backend), read its banner up to "ready", stop
    it with SIGTERM: (banner, what it printed after, exit status)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alternator_shm", "emulator", "--backend", "null", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        proc.send_signal(signal.SIGTERM)  # our own child, by pid
        out, err = proc.communicate(timeout=30)
        return "".join(lines) or err, out, proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _banner(*args: str) -> str:
    return _run_emulator(*args)[0]


@pytest.mark.parametrize(
    ("args", "headline"),
    [
        (["--dc", "dc1"], "1 node in 1 datacenter (dc1: 1 node in 1 rack)"),
        (["--nodes", "1"], "1 node in 1 datacenter (dc1: 1 node in 1 rack)"),
        ([], "3 nodes in 1 datacenter (dc1: 3 nodes in 3 racks)"),
        (["--dc", "dc1:2", "--dc", "dc2"],
         "3 nodes in 2 datacenters (dc1: 2 nodes in 2 racks, dc2: 1 node in 1 rack)"),
    ],
)
def test_emulator_banner_counts_and_plurals(args: list[str], headline: str) -> None:
    text = _banner(*args)
    first = text.splitlines()[0]
    assert first == f"alternator emulator: {headline}, profile current, backend null", text
    nodes = [line for line in text.splitlines() if line.startswith("  node ")]
    assert len(nodes) == int(headline.split()[0])


def test_plurals_in_command_output(tmp_path: Any) -> None:
    from alternator_shm.cli import plural

    assert [plural(n, "node") for n in (0, 1, 2)] == ["0 nodes", "1 node", "2 nodes"]
    assert plural(1, "process", "processes") == "1 process"
    assert plural(3, "process", "processes") == "3 processes"
