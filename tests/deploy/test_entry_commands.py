"""Each service's command and health check from docker-compose.yml, run as plain processes on this machine.

What a container would do differently is only where things are: Redis and
the store listen on free loopback ports instead of 6379/8700, volumes are
temporary directories, the service names `redis` and `store` resolve to
127.0.0.1, and `corral` is this interpreter's ``python -m scheduler``. The
command lines and the environment are otherwise taken from the file as is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scheduler.embedded import free_port, redis_server_binary, stop_process
from scheduler.registry import live_workers
from tests.deploy.compose import as_list, load_compose
from tests.integration.conftest import make_images, tiny_model  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASSWORD = "fedcba9876543210fedcba9876543210"


def _wait(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}:\n{log.read_text()[-3000:] if log else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _localize(text: str, ports: dict[str, int], dirs: dict[str, Path]) -> str:
    """Container addresses and mount points -> this machine's."""
    text = text.replace("@redis:6379", f"@127.0.0.1:{ports['redis']}")
    text = text.replace("http://store:8700", f"http://127.0.0.1:{ports['store']}")
    text = text.replace("127.0.0.1:8700", f"127.0.0.1:{ports['store']}")
    for mount, local in dirs.items():  # a mount point only as a whole path, never inside a URL
        if text == mount or text.startswith(mount + "/"):
            return str(local) + text[len(mount):]
        text = text.replace(f" {mount} ", f" {local} ").replace(f" {mount}\n", f" {local}\n")
        if text.endswith(f" {mount}"):
            text = text[:-len(mount)] + str(local)
    return text


def _corral(args: list[str]) -> list[str]:
    assert args and args[0] != "corral", "the image's ENTRYPOINT is corral; commands are its arguments"
    return [sys.executable, "-m", "scheduler", *args]


def _healthcheck(test: list[str], env: dict[str, str], ports: dict[str, int], dirs: dict[str, Path]) -> int:
    kind, *argv = test
    assert kind == "CMD"
    argv = [_localize(a, ports, {}) for a in argv]
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "redis-cli":
        argv[0] = str(Path(redis_server_binary()).with_name("redis-cli"))
        if not os.access(argv[0], os.X_OK):
            argv[0] = str(Path(sys.executable).with_name("redis-cli"))
        argv[1:1] = ["-p", str(ports["redis"])]  # the container's redis-cli talks to the default port
    return subprocess.run(argv, env=env, check=False, capture_output=True, timeout=20).returncode


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict]:
    doc = load_compose({"REDIS_PASSWORD": PASSWORD})
    ports = {"redis": free_port(), "store": free_port()}
    dirs = {"/run/secrets/store_token": tmp_path / "store_token", "/models": tmp_path / "models",
            "/data": tmp_path / "data", "/cache": tmp_path / "cache"}
    for key in ("/models", "/data", "/cache"):
        dirs[key].mkdir()
    dirs["/run/secrets/store_token"].write_text("t" * 32 + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(redis_server_binary())
    procs: list[subprocess.Popen] = []
    state = {"doc": doc, "ports": ports, "dirs": dirs, "procs": procs, "tmp": tmp_path,
             "base_env": {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
             "path": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    yield state
    for proc in reversed(procs):
        if proc.poll() is None:
            stop_process(proc, timeout=10)


def _start(fleet: dict, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = fleet["tmp"] / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    fleet["procs"].append(proc)
    return proc, log


def _service_env(fleet: dict, name: str) -> dict[str, str]:
    service = fleet["doc"]["services"][name]
    env = dict(fleet["base_env"])
    env.update({k: _localize(str(v), fleet["ports"], fleet["dirs"]) for k, v in service.get("environment", {}).items()})
    env["PATH"] = fleet["path"]
    return env


def _start_redis(fleet: dict) -> None:
    service = fleet["doc"]["services"]["redis"]
    argv = [_localize(a, fleet["ports"], {"/data": fleet["dirs"]["/data"]}) for a in as_list(service["command"])]
    assert argv[:2] == ["sh", "-c"]
    argv[2] += f" --port {fleet['ports']['redis']} --bind 127.0.0.1"  # the container listens on 6379
    env = {**_service_env(fleet, "redis"), "TMPDIR": str(fleet["tmp"])}
    proc, log = _start(fleet, "redis", argv, env)
    check = service["healthcheck"]["test"]
    _wait(lambda: _healthcheck(check, env, fleet["ports"], fleet["dirs"]) == 0, 20, "redis health check", proc, log)
    anonymous = redis.Redis(port=fleet["ports"]["redis"])
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    r = redis.Redis(port=fleet["ports"]["redis"], password=PASSWORD)
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    # `exec`: the server is the process Compose signals (no shell in between to swallow SIGTERM),
    # and the password is not on its command line
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_text().replace("\0", " ")
    assert "redis-server" in cmdline and PASSWORD not in cmdline
    assert oct((fleet["tmp"] / "redis.conf").stat().st_mode & 0o777) == "0o600"


def _start_store(fleet: dict) -> None:
    service = fleet["doc"]["services"]["store"]
    args = [_localize(a, fleet["ports"], fleet["dirs"]) for a in as_list(service["command"])]
    args[args.index("--port") + 1] = str(fleet["ports"]["store"])
    args[args.index("--host") + 1] = "127.0.0.1"  # 0.0.0.0 inside the container's own network
    env = _service_env(fleet, "store")
    proc, log = _start(fleet, "store", _corral(args), env)
    check = service["healthcheck"]["test"]
    _wait(lambda: _healthcheck(check, env, fleet["ports"], fleet["dirs"]) == 0, 60, "store health check", proc, log)


def _start_worker(fleet: dict) -> tuple[subprocess.Popen, dict[str, str]]:
    service = fleet["doc"]["services"]["worker-cpu"]
    env = _service_env(fleet, "worker-cpu")
    assert env["CORRAL_REDIS_URL"] == f"redis://:{PASSWORD}@127.0.0.1:{fleet['ports']['redis']}/0"
    args = as_list(service["command"]) + ["--visibility-timeout", "30"]
    proc, log = _start(fleet, "worker-cpu", _corral(args), env)
    check = service["healthcheck"]["test"]
    _wait(lambda: _healthcheck(check, env, fleet["ports"], fleet["dirs"]) == 0, 60, "worker health check", proc, log)
    return proc, env


def test_the_fleet_comes_up_healthy_from_the_compose_commands(fleet: dict, tiny_model: Path) -> None:  # noqa: F811
    _start_redis(fleet)
    _start_store(fleet)
    worker, env = _start_worker(fleet)
    r = redis.Redis.from_url(env["CORRAL_REDIS_URL"])
    (info,) = live_workers(r)
    assert (info.device, info.backend, info.hostname) == ("cpu", "onnxruntime", socket.gethostname())
    # a job through the compose worker, submitted the way the README's host command does
    inputs = make_images(fleet["dirs"]["/data"] / "in", 5)
    out = fleet["dirs"]["/data"] / "out"
    cli_env = {**fleet["base_env"], "CORRAL_REDIS_URL": env["CORRAL_REDIS_URL"]}
    done = subprocess.run([sys.executable, "-m", "scheduler", "submit", str(inputs[0].parent), "--model",
                           str(tiny_model), "--out", str(out), "--wait"], env=cli_env, check=False, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in inputs]
    # SIGTERM (what `docker compose stop` sends) drains and exits cleanly within the grace period
    assert stop_process(worker, timeout=30) == 0
