"""The embedded default as a user meets it: `python -m services.suite run` (what `make run`
starts), the README's grpcurl lines replayed in order through tools.grpcurl and its curl lines
against the gateway, Ctrl-C, and a second start that keeps the data."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import registry
from tools import grpcurl

Ports = dict[str, int]  # service -> the free port it runs on in this test
Suite = tuple[Path, Ports, subprocess.Popen]

ROOT = Path(__file__).resolve().parents[2]
# NAME=$(grpcurl ... | grep -o 'PATTERN' | head -1): a value taken from an answer for later lines.
ASSIGNMENT = re.compile(r"^(\w+)=\$\(((?:grpcurl|curl) .*) \| grep -o '([^']+)' \| head -1\)$")
GATEWAY_PORT = 8080  # the README's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_commands() -> list[tuple[str, str]]:
    """(grpcurl command line, text its output must contain) from the README's API section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Calling the API", 1)[1].split("\n## ", 1)[0]
    commands: list[tuple[str, str]] = []
    for line in section.splitlines():
        if line.startswith(("grpcurl ", "curl ")) or ASSIGNMENT.match(line):
            commands.append((line, ""))
        elif line.startswith("# → ") and commands:
            commands[-1] = (commands[-1][0], line.removeprefix("# → "))
    return commands


def free_ports() -> Ports:
    return {entry.name: free_port() for entry in registry.SERVICES} | {"gateway": free_port()}


def start_suite(data_dir: Path, ports: Ports) -> subprocess.Popen:
    env = {**os.environ, "LOYALTY_DATA_DIR": str(data_dir),
           **{f"LOYALTY_{name.upper()}_PORT": str(port) for name, port in ports.items()}}
    for name in ("LOYALTY_ADMIN_KEY", "LOYALTY_AUTH_SECRET", "LOYALTY_PII_KEY", "LOYALTY_REDIS_URL"):
        env.pop(name, None)
    # Every start writes demo.env once it has seeded (or found) the demo: the sign it is ready.
    (data_dir / "demo.env").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "services.suite", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(f"127.0.0.1:{ports['membership']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                serving = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1
            except grpc.RpcError:
                serving = False
            if serving and (data_dir / "demo.env").exists():
                return proc
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the suite did not come up:\n" + proc.stdout.read())


def stop_suite(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def demo_env(data_dir: Path) -> dict[str, str]:
    env = {}
    for line in (data_dir / "demo.env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def run_line(line: str, env: dict[str, str], ports: Ports) -> str:
    """Runs one README line as a shell would; returns what it prints (an error included)."""
    assignment = ASSIGNMENT.match(line)
    if assignment:
        name, command, pattern = assignment.groups()
        found = re.search(pattern, run_line(command, env, ports))
        assert found, f"{command} printed nothing matching {pattern}"
        env[name] = found.group(0)
        return found.group(0)
    line = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)
    if line.startswith("curl "):
        argv = [a.replace(f"localhost:{GATEWAY_PORT}", f"127.0.0.1:{ports['gateway']}")
                 .replace(f"127.0.0.1:{GATEWAY_PORT}", f"127.0.0.1:{ports['gateway']}") for a in shlex.split(line)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr
    argv = shlex.split(line)[1:]
    for entry in registry.SERVICES:  # the README names the default ports
        argv = [a.replace(f"localhost:{entry.port}", f"127.0.0.1:{ports[entry.name]}") for a in argv]
    try:
        return grpcurl.run(argv)
    except grpcurl.GrpcurlError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    data_dir = tmp_path_factory.mktemp("suite-data")
    ports = free_ports()
    proc = start_suite(data_dir, ports)
    yield data_dir, ports, proc
    if proc.poll() is None:
        proc.kill()


def test_readme_grpcurl_lines_work_against_the_embedded_default(suite: Suite) -> None:
    data_dir, ports, _ = suite
    env = demo_env(data_dir)
    commands = readme_commands()
    assert len(commands) >= 10
    for line, expected in commands:
        output = run_line(line, env, ports)
        # Points learns of members and orders from events, a moment after membership answered: a
        # reader at the keyboard never notices, a test on a busy machine may run ahead. Every line
        # is safe to repeat (request ids, order ids).
        deadline = time.monotonic() + 10
        while expected not in output and time.monotonic() < deadline:
            time.sleep(0.2)
            output = run_line(line, env, ports)
        assert expected in output, f"{line}\n--- printed ---\n{output}"
        assert expected or not output.startswith("ERROR:"), f"{line}\n--- failed ---\n{output}"


def test_the_demo_shop_has_members_in_every_tier(suite: Suite) -> None:
    data_dir, ports, _ = suite
    env = demo_env(data_dir)
    output = grpcurl.run(["-plaintext", "-H", f"authorization: Bearer {env['SHOP_KEY']}",
                          "-d", '{"shop_id":"demo-shop"}', f"127.0.0.1:{ports['membership']}",
                          "loyalty.membership.v1.MembershipService/ExportMembers"])
    codes = set(re.findall(r'"tierCode": "(\w+)"', output))
    assert codes == {"regular", "silver", "gold", "platinum", "diamond"}
    assert len(re.findall(r'"memberId"', output)) >= 40


def test_ctrl_c_stops_cleanly_and_a_second_run_keeps_the_data(suite: Suite) -> None:
    data_dir, ports, proc = suite
    env = demo_env(data_dir)
    readme_tier = ('grpcurl -plaintext -H "authorization: Bearer $SHOP_KEY" '
                   '-d \'{"shop_id":"demo-shop","buyer_id":"demo-buyer-020"}\' localhost:50051 '
                   'loyalty.membership.v1.MembershipService/GetTier')
    before = run_line(readme_tier, env, ports)
    out = stop_suite(proc)
    assert "stopped." in out and "Traceback" not in out
    again = start_suite(data_dir, ports)
    try:
        assert demo_env(data_dir) == env  # the same keys
        assert run_line(readme_tier, env, ports) == before
    finally:
        stop_suite(again)
