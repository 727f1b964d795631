from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.exceptions import SettingsError
from scheduler.settings import DEFAULT_REDIS_URL, SchedulerSettings


def test_scheduler_settings_from_the_environment(tmp_path: Path) -> None:
    s = SchedulerSettings.from_env({"CORRAL_REDIS_URL": "redis://q/2", "CORRAL_BLOB_TTL": "60",
                                    "CORRAL_STORE_URL": "http://store:8700", "XDG_CACHE_HOME": str(tmp_path)})
    assert (s.redis_url, s.blob_ttl, s.store.url) == ("redis://q/2", 60, "http://store:8700")
    assert s.state_dir == tmp_path / "corral" and s.store.cache_dir == tmp_path / "corral"
    assert SchedulerSettings.from_env({"CORRAL_STATE_DIR": str(tmp_path / "st")}).state_dir == tmp_path / "st"
    empty = SchedulerSettings.from_env({})
    assert empty.redis_url is None and empty.fleet_redis_url == DEFAULT_REDIS_URL  # None: `run` embeds one
    assert SchedulerSettings.from_env({"CORRAL_REDIS_URL": "redis://a"}, redis_url="redis://b").redis_url == "redis://b"
    with pytest.raises(SettingsError, match="CORRAL_BLOB_TTL='1d'"):
        SchedulerSettings.from_env({"CORRAL_BLOB_TTL": "1d"})


def _threads(*args: str, env: dict[str, str] | None = None) -> str:
    code = ("import sys; from scheduler.cli import main; from engine.ops import threads\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\nprint(threads.num_threads())")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}).stdout.strip().splitlines()[-1]


def test_the_engine_reads_no_environment_and_the_command_sets_the_threads() -> None:
    code = "from engine.ops import threads; print(threads.num_threads())"
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin"}).stdout.strip()
    ignored = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "CORRAL_NUM_THREADS": "7"}).stdout.strip()
    assert ignored == default  # importing the engine does not read CORRAL_NUM_THREADS
    assert _threads("--threads", "3", "jobs", "--help") == "3"
    assert _threads("jobs", "--help", env={"CORRAL_NUM_THREADS": "5"}) == "5"
