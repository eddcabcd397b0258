"""Every code snippet of the README runs, as written, against the emulator.

The snippets are read from README.md itself, so they cannot drift from what is tested. They
form one story: "Use" creates the ``people`` table and writes to it; the gunicorn, uWSGI,
Celery and multiprocessing recipes then read and write that table under their real servers,
started with the README's own command lines. The only edits are the address book: the
README's example seeds, port and credentials become the emulated cluster's (each substitution
must apply), and a guard in every process refuses any connection off loopback.

Also checked here: the documented defaults (options table, retries, timeouts, segment size)
against the code, and that no docstring points to a file the package does not ship.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from servers.servers_harness import ServerProcess, free_port, http_get, uwsgi_command, wait_for

import alternator_shm
from alternator_shm import Helper
from alternator_shm.discovery import CONNECT_TIMEOUT, REQUEST_TIMEOUT
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import layout, segment

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TABLE = "people"

# The README's example address book, and what each becomes in the test.
EXAMPLE_SEEDS = '["10.0.0.1", "10.0.0.2"]'
EXAMPLE_CREDENTIALS = '("role", "salted_hash")'
EXAMPLE_PORTS = ("port=8000", '"port": 8000')
EXAMPLE_BROKER = 'broker="redis://localhost:6379/0"'
EXAMPLE_HTTP = "127.0.0.1:8080"

# Loaded by every Python process the tests start (PYTHONPATH): refuse traffic off loopback,
# so a snippet that escaped substitution fails instead of reaching a real network.
GUARD_DIR = Path(__file__).resolve().parent / "loopback_guard"


@dataclass(frozen=True)
class Snippet:
    lang: str
    code: str
    heading: str
    line: int


def snippets() -> list[Snippet]:
    text = README.read_text()
    found = []
    heading = ""
    in_block, lang, start, body = False, "", 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if in_block:
            if line.startswith("```"):
                found.append(Snippet(lang, "\n".join(body) + "\n", heading, start))
                in_block = False
            else:
                body.append(line)
        elif line.startswith("```"):
            in_block, lang, start, body = True, line[3:].strip(), number, []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return found


def python_snippet(heading: str, first_line: str = "") -> str:
    matches = [s.code for s in snippets() if s.lang == "python" and s.heading == heading
               and s.code.startswith(first_line)]
    assert len(matches) == 1, f"README: {len(matches)} python snippets under {heading!r}"
    return matches[0]


def console_line(program: str, naming: str = "") -> list[str]:
    """The README's command line that starts with ``program`` and names ``naming``."""
    lines = [line for s in snippets() if s.lang == "console"
             for line in s.code.splitlines()
             if line.startswith(program + " ") and naming in line]
    assert len(lines) == 1, f"README: {len(lines)} command lines start with {program!r}"
    return shlex.split(lines[0], comments=True)


# Which test runs which python snippet: (heading, first line).
COVERED = {
    ("Use", ""): "test_use",
    ("gunicorn", "# myapp.py"): "test_gunicorn_recipe",
    ("gunicorn", "# gunicorn.conf.py"): "test_gunicorn_recipe",
    ("uWSGI", "# myapp.py"): "test_uwsgi_recipe",
    ("Celery (prefork pool)", "# tasks.py"): "test_celery_recipe",
    ("multiprocessing.Pool (fork, spawn, forkserver)", "import multiprocessing"):
        "test_multiprocessing_recipe",
    ("The local Alternator emulator", "from alternator_shm.emulator import Cluster"):
        "test_emulator_snippet",
    ("The local Alternator emulator", "import pytest"): "test_pytest_fixture_snippet",
    ("FastAPI / Starlette under uvicorn or gunicorn (async)", "# asgi_app.py"):
        "test_asgi_recipe",
    ("Metrics and tracing", "from prometheus_client import REGISTRY"): "test_metrics_snippets",
    ("Key-route affinity (lightweight transactions)", "from alternator_shm import Helper"):
        "test_affinity_snippet",
    ("Metrics and tracing", "from prometheus_client import CollectorRegistry"):
        "test_metrics_snippets",
}


def test_every_python_snippet_has_a_test() -> None:
    for s in snippets():
        if s.lang != "python":
            continue
        owners = [t for (heading, first), t in COVERED.items()
                  if s.heading == heading and s.code.startswith(first)]
        assert len(owners) == 1, f"README line {s.line} ({s.heading}): no test runs it"
    for heading, first in COVERED:
        python_snippet(heading, first)


def test_every_snippet_is_fenced_with_a_language() -> None:
    for s in snippets():
        assert s.lang in ("python", "console", ""), (s.line, s.lang)


# --------------------------------------------------------------------------- the story


@dataclass
class Story:
    cluster: Cluster
    tmp: Path
    env: dict[str, str]
    use_output: str

    def localize(self, code: str) -> str:
        key, secret = self.cluster.credentials
        out = code
        for example, real in (
            (EXAMPLE_SEEDS, json.dumps(list(self.cluster.seeds))),
            (EXAMPLE_CREDENTIALS, repr((key, secret))),
        ):
            if example in code:
                out = out.replace(example, real)
        for example in EXAMPLE_PORTS:
            out = out.replace(example, example.replace("8000", str(self.cluster.port)))
        assert "10.0.0." not in out and "8000" not in out, f"unsubstituted example in:\n{out}"
        return out

    def run_script(self, name: str, code: str, timeout: float = 90) -> str:
        path = self.tmp / name
        path.write_text(code)
        proc = subprocess.run([sys.executable, str(path)], cwd=self.tmp, env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-4000:]}"
        return proc.stdout

    def item(self, key: str) -> dict[str, Any] | None:
        k, s = self.cluster.credentials
        client = boto3.client("dynamodb", endpoint_url=self.cluster.nodes[0].url,
                              region_name="alternator", aws_access_key_id=k,
                              aws_secret_access_key=s)
        try:
            item: dict[str, Any] | None = client.get_item(
                TableName=TABLE, Key={"p": {"S": key}}).get("Item")
            return item
        finally:
            client.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    tmp = tmp_path_factory.mktemp("readme")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(GUARD_DIR), str(tmp), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with Cluster(nodes=3, users={"readme": f"secret-{uuid.uuid4().hex[:8]}"}) as cluster:
        st = Story(cluster, tmp, env, "")
        # "Use" runs first: it creates the table the rest of the story uses.
        st.use_output = st.run_script("use.py", st.localize(python_snippet("Use")))
        yield st
    from alternator_shm.fleet import cleanup, list_fleets

    for fleet in list_fleets():  # the snippets' default namespaces, derived from the seeds
        if any(seed in fleet.nodes for seed in cluster.seeds):
            cleanup(fleet.namespace)


def test_the_guard_refuses_traffic_off_loopback(story: Story) -> None:
    code = "import socket\nsocket.create_connection(('10.0.0.1', 8000), timeout=5)\n"
    path = story.tmp / "escape.py"
    path.write_text(code)
    proc = subprocess.run([sys.executable, str(path)], env=story.env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0 and "loopback guard" in proc.stderr


def test_use(story: Story) -> None:
    out = story.use_output
    assert "'alice'" in out and "'Paris'" in out, out
    assert "'bob'" in out and "'Oslo'" in out, out
    assert story.item("alice") == {"p": {"S": "alice"}, "city": {"S": "Paris"}}


def test_affinity_snippet(story: Story) -> None:
    code = story.localize(python_snippet("Key-route affinity (lightweight transactions)"))
    story.run_script("affinity.py", code)
    assert story.item("alice") == {"p": {"S": "alice"}, "city": {"S": "Paris"}}


def test_multiprocessing_recipe(story: Story) -> None:
    code = story.localize(python_snippet("multiprocessing.Pool (fork, spawn, forkserver)"))
    out = story.run_script("pool_recipe.py", code)
    assert "'alice'" in out and "'bob'" in out, out


def _serve(story: Story, argv: list[str], name: str, path: str = "/") -> None:
    """Start a README server command on a free loopback port and read alice through it."""
    line = " ".join(argv)
    port = free_port()
    if "--host" in argv:  # uvicorn: --host 127.0.0.1 --port 8080
        host, example = argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]
        assert f"{host}:{example}" == EXAMPLE_HTTP, f"must listen on {EXAMPLE_HTTP}: {line}"
        argv = [str(port) if a == example else a for a in argv]
    else:
        assert EXAMPLE_HTTP in line, f"the README command must listen on {EXAMPLE_HTTP}: {line}"
        argv = [a.replace(EXAMPLE_HTTP, f"127.0.0.1:{port}") for a in argv]
    with ServerProcess(argv, story.env, story.tmp / f"{name}.log", cwd=story.tmp) as server:
        def answered() -> bytes | None:
            try:
                status, body = http_get("127.0.0.1", port, path, timeout=10)
            except OSError:
                return None
            return body if status == 200 else None

        body = wait_for(answered, 60, f"{name} to answer", server.output)
        assert json.loads(body) == {"p": {"S": "alice"}, "city": {"S": "Paris"}}


@pytest.mark.servers
@pytest.mark.slow
def test_gunicorn_recipe(story: Story) -> None:
    app = story.localize(python_snippet("gunicorn", "# myapp.py"))
    (story.tmp / "myapp.py").write_text(app)
    (story.tmp / "gunicorn.conf.py").write_text(python_snippet("gunicorn", "# gunicorn.conf.py"))
    argv = console_line("gunicorn", "myapp:app")
    assert "myapp:app" in argv and "def app(" in app
    _serve(story, [sys.executable, "-m", "gunicorn", *argv[1:]], "gunicorn")


@pytest.mark.servers
@pytest.mark.slow
def test_uwsgi_recipe(story: Story) -> None:
    app = story.localize(python_snippet("gunicorn", "# myapp.py"))
    app += "\n" + python_snippet("uWSGI", "# myapp.py")
    (story.tmp / "myapp.py").write_text(app)
    argv = console_line("uwsgi")
    module = argv[argv.index("--module") + 1]
    name, _, attr = module.partition(":")
    assert name == "myapp" and f"def {attr}(" in app, f"--module {module} names no callable"
    _serve(story, [*uwsgi_command(), *argv[1:]], "uwsgi")


@pytest.mark.servers
@pytest.mark.slow
def test_celery_recipe(story: Story) -> None:
    celery_dir = story.tmp / "celery"
    for sub in ("queue", "staging", "processed", "control"):
        (celery_dir / sub).mkdir(parents=True, exist_ok=True)
    code = story.localize(python_snippet("Celery (prefork pool)", "# tasks.py"))
    assert EXAMPLE_BROKER in code
    # The one change besides the address book: kombu's filesystem broker, so no Redis.
    folders = {"data_folder_in": str(celery_dir / "queue"),
               "data_folder_out": str(celery_dir / "queue"),
               "processed_folder": str(celery_dir / "processed"),
               "control_folder": str(celery_dir / "control"), "polling_interval": 0.05}
    code = code.replace(EXAMPLE_BROKER, 'broker="filesystem://"') + textwrap.dedent(
        f"""
        app.conf.broker_transport_options = {folders!r}
        app.conf.broker_connection_retry_on_startup = True
        """
    )
    (story.tmp / "tasks.py").write_text(code)
    argv = console_line("celery")
    argv = [sys.executable, "-m", "celery", *argv[1:], "--hostname",
            f"readme-{uuid.uuid4().hex[:8]}@localhost", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]
    with ServerProcess(argv, story.env, story.tmp / "celery.log", cwd=story.tmp) as server:
        from celery import Celery

        producer = Celery("tasks", broker="filesystem://")
        # Messages are written to staging and renamed into the queue: a rename is atomic,
        # kombu's in-place write is not (a worker could read a half-written file).
        producer.conf.broker_transport_options = dict(
            folders, data_folder_in=str(celery_dir / "staging"),
            data_folder_out=str(celery_dir / "staging"))
        producer.send_task("tasks.store", args=("carol", "Rome"))
        for name in os.listdir(celery_dir / "staging"):
            os.rename(celery_dir / "staging" / name, celery_dir / "queue" / name)
        wait_for(lambda: story.item("carol"), 60, "the Celery task to store carol",
                 server.output)
    assert story.item("carol") == {"p": {"S": "carol"}, "city": {"S": "Rome"}}


@pytest.mark.servers
@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_asgi_recipe(story: Story, server: str) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    app = story.localize(python_snippet("FastAPI / Starlette under uvicorn or gunicorn (async)",
                                        "# asgi_app.py"))
    (story.tmp / "asgi_app.py").write_text(app)
    argv = console_line(server, "asgi_app:app")
    _serve(story, [sys.executable, "-m", server, *argv[1:]], f"asgi-{server}", "/item/alice")


def test_metrics_snippets(story: Story, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    first = python_snippet("Metrics and tracing", "from prometheus_client import REGISTRY")
    out = story.run_script("metrics_first.py", first + textwrap.dedent("""
        from prometheus_client import generate_latest
        print(generate_latest(REGISTRY).decode())
        """))
    assert "alternator_shm_node_picks_total" in out
    second = python_snippet("Metrics and tracing",
                            "from prometheus_client import CollectorRegistry")
    story.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        out = story.run_script("metrics_second.py", second + "\nprint(metrics().decode())\n")
    finally:
        del story.env["PROMETHEUS_MULTIPROC_DIR"]
    assert "alternator_shm_node_picks_total" in out


def test_emulator_snippet(story: Story) -> None:
    code = python_snippet("The local Alternator emulator",
                          "from alternator_shm.emulator import Cluster")
    story.run_script("emulator_snippet.py", code, timeout=120)


def test_pytest_fixture_snippet(story: Story) -> None:
    code = python_snippet("The local Alternator emulator", "import pytest")
    path = story.tmp / "test_fixture_snippet.py"
    path.write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(path)],
        cwd=story.tmp, env=story.env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


# --------------------------------------------------------------------------- documented facts


def _options_table() -> dict[str, str]:
    text = README.read_text()
    section = text[text.index("### Options"):text.index("### Methods")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[name] = cells[1].strip("`")
    return rows


def test_documented_option_defaults_match_the_code() -> None:
    documented = _options_table()
    params = inspect.signature(Helper).parameters
    public = {n: p for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    assert set(documented) == set(public), set(documented) ^ set(public)
    for name, text in documented.items():
        default = public[name].default
        if text == "(required)":
            assert default is inspect.Parameter.empty, name
        elif text == "derived":
            assert default is None, name
        else:
            assert ast.literal_eval(text) == default, (name, text, default)


def test_documented_botocore_defaults_match_the_code() -> None:
    text = " ".join(README.read_text().split())
    helper = Helper(["127.0.0.1"], credentials=("k", "s"), namespace=f"t-{uuid.uuid4().hex}")
    try:
        config = helper.new_dynamodb_client().meta.config
    finally:
        helper.close()
    retries = re.search(r"retries `(\{[^`]*\})`", text)
    assert retries is not None
    assert json.loads(retries.group(1)) == config.retries
    connect = re.search(r"connect timeout (\d+(?:\.\d+)?) s", text)
    read = re.search(r"read timeout (\d+(?:\.\d+)?) s", text)
    assert connect and float(connect.group(1)) == config.connect_timeout
    assert read and float(read.group(1)) == config.read_timeout
    discovery = re.search(r"discovery uses a (\d+(?:\.\d+)?) s connect timeout and one "
                          r"(\d+(?:\.\d+)?) s total deadline per request", text)
    assert discovery is not None
    assert (float(discovery.group(1)), float(discovery.group(2))) == (CONNECT_TIMEOUT,
                                                                     REQUEST_TIMEOUT)


def test_documented_segment_size_holds() -> None:
    text = " ".join(README.read_text().split())
    assert "well under 1 MiB (`TOTAL_SIZE` in `alternator_shm/fleet/layout.py`)" in text
    assert layout.TOTAL_SIZE < 1024 * 1024
    kib = layout.TOTAL_SIZE // 1024
    assert f"The segment needs {kib} KiB per namespace" in text
    name = segment.base_name("x").split(".")[0]
    assert f"segment `/{name}.<euid>.<hash>` of {kib} KiB per namespace (a " \
           f"{layout.HEADER_SIZE // 1024} KiB header, {layout.HEALTH_CAPACITY} health entries of " \
           f"{layout.HEALTH_ENTRY} bytes, two {layout.SLOT_SIZE // 1024} KiB table slots" in text
    assert f"{layout.HEALTH_CAPACITY} per-node load entries of {layout.LOAD_ENTRY} bytes" in text
    for other in re.findall(r"rrlb\d", text):
        assert other == name, f"README names the segment {other}, the code {name}"


def test_documented_profiles_are_the_accepted_ones() -> None:
    from alternator_shm.emulator import PROFILES

    readme = ROOT / "alternator_shm" / "emulator" / "README.md"  # the emulator's reference
    text = readme.read_text()
    missing = [p for p in PROFILES if f"`{p}`" not in text and f'"{p}"' not in text]
    assert not missing, f"{readme}: profiles accepted but not documented: {missing}"
    assert "--forward-transactions" in text or "forward_transactions" in text


# The project's design documents: not shipped, so ``help()`` must not send users to them.
# (The public peer specs, e.g. scylladb/alternator-client-python's feature-specs, may be cited.)
_INTERNAL_DOCS = ("API.md", "ARCHITECTURE.md", "SHARED_STATE.md", "ALTERNATOR_PROTOCOL.md",
                  "PEERS.md", "PEERS_UPDATE")


def test_docstrings_name_no_file_the_package_does_not_ship() -> None:
    package = Path(alternator_shm.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        for doc in re.findall(r'"""(.*?)"""', text, re.S):
            for name in _INTERNAL_DOCS:
                assert name not in doc, f"{path}: docstring points to {name}"


def _metrics_table() -> dict[str, tuple[str, list[str]]]:
    """The README's metrics table: name -> (type column, labels)."""
    text = README.read_text()
    start = text.index("| metric | type | labels |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, kind, labels = (cell.strip() for cell in line.strip("|").split("|"))
        label_names = [re.sub(r"\s*\(.*", "", part).strip() for part in labels.split(",")]
        rows[name.strip("`")] = (kind, [n for n in label_names if n])
    return rows


def test_every_exported_metric_is_in_the_readme_table() -> None:
    from alternator_shm.metrics import AlternatorCollector

    exported = {}
    for family in AlternatorCollector(fleets=lambda: []).collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = list(getattr(family, "_labelnames", ()))
        exported[name] = (family.type, labels)
    documented = _metrics_table()
    assert sorted(documented) == sorted(exported), "README metrics table vs the collector"
    for name, (kind, labels) in exported.items():
        doc_kind, doc_labels = documented[name]
        assert doc_kind.startswith(kind), (name, doc_kind, kind)
        assert doc_labels == labels, (name, doc_labels, labels)


def test_the_benchmark_summary_is_the_one_bench_compare_wrote() -> None:
    # The README's side-by-side table comes from `scripts/bench_compare.py --update-readme`,
    # which writes the same block into benchmarks/compare.md; an edit by hand (or a re-run
    # whose results were not copied) shows up as a difference.
    begin, end = "<!-- bench_compare summary: begin -->", "<!-- bench_compare summary: end -->"

    def block(text: str) -> str:
        return text[text.index(begin) + len(begin) : text.index(end)].strip()

    readme = block(README.read_text())
    written = block((ROOT / "benchmarks" / "compare.md").read_text())
    assert readme == written
    assert "| measure |" in readme and "Run 20" in readme
