"""``corral store serve | push | ls | pull`` end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from scheduler.cli import main
from store.server import loopback_socket
from tests.store.conftest import StoreFactory


def test_push_ls_pull_against_a_live_store(live_store: StoreFactory, model_file: Path, tmp_path: Path) -> None:
    live = live_store()
    token_file = tmp_path / "token0"
    runner = CliRunner()
    pushed = runner.invoke(main, ["store", "push", str(model_file), "--name", "tiny", "--url", live.url,
                                  "--token-file", str(token_file)])
    assert pushed.exit_code == 0, pushed.output
    assert "stored tiny:1" in pushed.output
    refused = runner.invoke(main, ["store", "push", str(model_file), "--name", "tiny", "--url", live.url])
    assert refused.exit_code == 1 and "HTTP 401" in refused.output and "bearer token" in refused.output
    out = tmp_path / "pulled.corral"
    pulled = runner.invoke(main, ["store", "pull", "tiny@fp16", "-o", str(out)], env={"CORRAL_STORE_URL": live.url})
    assert pulled.exit_code == 0 and "verified" in pulled.output
    assert out.stat().st_size < model_file.stat().st_size
    listed = runner.invoke(main, ["store", "ls", "--url", live.url])
    assert listed.exit_code == 0 and "tiny:1 (latest)" in listed.output and "fp16" in listed.output
    bad = runner.invoke(main, ["store", "pull", "../etc", "-o", str(out), "--url", live.url])
    assert bad.exit_code == 1 and "not allowed" in bad.output


def test_local_root_without_a_server(model_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "store")
    assert runner.invoke(main, ["store", "push", str(model_file), "--name", "tiny", "--root", root]).exit_code == 0
    out = tmp_path / "lut4.corral"
    pulled = runner.invoke(main, ["store", "pull", "tiny:1@lut4", "-o", str(out), "--root", root])
    assert pulled.exit_code == 0, pulled.output
    listed = runner.invoke(main, ["store", "ls", "--root", root, "--json"])
    assert '"lut4"' in listed.output


def test_serve_command_runs_a_store(model_file: Path, tmp_path: Path) -> None:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    token = tmp_path / "token"
    token.write_text("t" * 32)
    proc = subprocess.Popen([sys.executable, "-m", "scheduler", "store", "serve", "--root", str(tmp_path / "root"),
                             "--port", str(port), "--token-file", str(token)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"{url}/v1/models")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "corral store serve did not start"
                time.sleep(0.1)
        assert answer.json() == {"models": []}
        pushed = httpx.post(f"{url}/v1/models/tiny", content=model_file.read_bytes(),
                            headers={"Authorization": "Bearer " + "t" * 32})
        assert pushed.status_code == 201 and (tmp_path / "root" / "tiny" / "1" / "master.corral").is_file()
    finally:
        proc.terminate()
        proc.wait(10)
