"""docker-compose.yml is a valid Compose file that sets up the fleet the README describes.

No Docker engine runs here. The file is checked three ways: against the
Compose specification by the compose_spec parser (a strict, typed parser:
unknown keys and wrong types fail), by `docker compose config` /
`docker-compose config` where one is installed, and by the assertions below
about what each service must have.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest
from compose_spec import PyCompose

from tests.deploy.compose import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    InterpolationError,
    as_list,
    interpolate,
    load_compose,
)

ENV = {"REDIS_PASSWORD": "0123456789abcdef0123456789abcdef"}


@pytest.fixture(scope="module")
def doc() -> dict:
    return load_compose(ENV)


def test_the_compose_spec_parser_accepts_the_file(doc: dict) -> None:
    import yaml

    compose = PyCompose.from_yaml(yaml.safe_dump({k: v for k, v in doc.items() if not k.startswith("x-")}))
    compose.validate()  # every volume, network and secret a service uses is declared
    assert set(compose.service_names()) == {"redis", "store", "worker-cpu", "worker-gpu", "flower"}


def test_the_compose_spec_parser_rejects_a_misspelt_key() -> None:
    """The check above can fail: the parser refuses keys the specification does not have."""
    with pytest.raises(ValueError, match="healthchek"):
        PyCompose.from_yaml("services:\n  redis:\n    image: redis\n    healthchek: {test: [CMD, true]}\n")


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="neither `docker compose` nor `docker-compose` is installed; "
                    "the compose_spec parser checks the file instead")
@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default-profile", "gpu-profile"])
def test_docker_compose_config_validates(profile: list[str], tmp_path) -> None:
    cli = _compose_cli()
    env = {"PATH": shutil.os.environ["PATH"], **ENV}
    ok = subprocess.run([*cli, "-f", str(COMPOSE_FILE), *profile, "config", "-q"], env=env, cwd=ROOT,
                        check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "-q"], env={"PATH": env["PATH"]},
                             cwd=ROOT, check=False, capture_output=True, text=True)
    assert missing.returncode != 0 and "REDIS_PASSWORD" in missing.stderr


def test_a_missing_redis_password_is_an_error_not_an_open_redis() -> None:
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        load_compose({})


def test_interpolation_follows_compose_rules() -> None:
    env = {"A": "x", "E": ""}
    assert interpolate("$${A} ${A} ${B:-d} ${E:-d} ${E-d} $A", env) == "${A} x d d  x"


def test_redis_has_a_password_an_append_only_file_and_refuses_to_evict(doc: dict) -> None:
    redis = doc["services"]["redis"]
    script = " ".join(as_list(redis["command"]))
    assert "requirepass" in script and "$REDIS_PASSWORD" in script
    assert ENV["REDIS_PASSWORD"] not in script  # the password is not in the process list
    assert "--appendonly yes" in script and "--maxmemory-policy noeviction" in script
    assert redis["environment"]["REDIS_PASSWORD"] == ENV["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF lives on a volume


def test_every_long_running_service_has_a_health_check(doc: dict) -> None:
    for name, service in doc["services"].items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"


def test_workers_wait_for_a_healthy_redis_and_store(doc: dict) -> None:
    for name in ("worker-cpu", "worker-gpu"):
        service = doc["services"][name]
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"},
                                         "store": {"condition": "service_healthy"}}
        env = service["environment"]
        assert env["CORRAL_REDIS_URL"] == f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/0"
        assert env["CORRAL_STORE_URL"] == "http://store:8700"
        assert "data:/data" in service["volumes"]  # the shared inputs/outputs volume


def test_cpu_workers_can_be_scaled(doc: dict) -> None:
    """`--scale worker-cpu=N` needs no fixed container name and no published host port."""
    service = doc["services"]["worker-cpu"]
    assert "container_name" not in service and "ports" not in service
    assert as_list(service["command"])[:3] == ["worker", "--device", "cpu"]


def test_the_gpu_worker_is_a_profile_with_an_nvidia_reservation(doc: dict) -> None:
    service = doc["services"]["worker-gpu"]
    assert service["profiles"] == ["gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["build"]["args"]["EXTRAS"] == "torch"
    assert "cuda:0" in as_list(service["command"])


def test_the_store_requires_a_token_for_uploads_and_keeps_models_on_a_volume(doc: dict) -> None:
    store = doc["services"]["store"]
    command = as_list(store["command"])
    assert command[:2] == ["store", "serve"] and "--token-file" in command
    assert command[command.index("--token-file") + 1] == "/run/secrets/store_token"
    assert store["secrets"] == ["store_token"] and "store_token" in doc["secrets"]
    assert "models:/models" in store["volumes"]
    assert "/v1/models" in " ".join(store["healthcheck"]["test"])


def test_flower_watches_the_same_password_protected_redis(doc: dict) -> None:
    flower = doc["services"]["flower"]
    assert f"--broker=redis://:{ENV['REDIS_PASSWORD']}@redis:6379/0" in flower["command"]
    assert flower["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_the_image_installs_every_package_and_runs_corral() -> None:
    dockerfile = DOCKERFILE.read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert f"COPY {pattern.rstrip('*')} " in dockerfile, f"the Dockerfile does not copy {pattern}"
    assert 'ENTRYPOINT ["corral"]' in dockerfile and "USER corral" in dockerfile
    ignored = DOCKERIGNORE.read_text().split()
    for path in (".venv", ".env", "secrets", ".git"):
        assert path in ignored, f".dockerignore lets {path} into the image"
