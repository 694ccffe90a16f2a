"""What can be checked of docker-compose.yml and the Dockerfile without a Docker engine."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "migrate", "corpus", "web", "worker-gpu", "worker-io"}
APP_SERVICES = {"migrate", "corpus", "web", "worker-gpu", "worker-io"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_commands_and_order():
    services = compose()["services"]
    assert set(services) == SERVICES
    assert services["worker-gpu"]["command"][services["worker-gpu"]["command"].index("-Q") + 1] \
        == "gpu"
    assert services["worker-io"]["command"][services["worker-io"]["command"].index("-Q") + 1] \
        == "io"
    for name in ("worker-gpu", "worker-io"):
        command = services[name]["command"]
        assert command[command.index("--prefetch-multiplier") + 1] == "1"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]
    for name in ("web", "worker-gpu", "worker-io"):
        assert services[name]["depends_on"]["migrate"]["condition"] \
            == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_environment_is_the_settings_of_the_scaled_setup():
    services = compose()["services"]
    fields = {f"IE_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {"IE_DATABASE_URL", "IE_BROKER_URL", "IE_REDIS_URL", "IE_SECRET_KEY",
                "IE_ACCESS_TOKEN", "IE_ENV"} <= set(env)
        assert set(env) <= fields, set(env) - fields  # every variable is a real setting
        assert env["IE_ENV"] == "production"
        assert env["IE_DATABASE_URL"].startswith("postgresql")
        assert env["IE_BROKER_URL"].startswith("redis://redis:")
        assert "/data" in services[name]["volumes"][0]


def test_every_command_names_something_that_exists():
    services = compose()["services"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in APP_SERVICES:
        command = services[name]["command"]
        program = command[0]
        if program == "python":
            assert command[1] == "-m"
            module = importlib.import_module(command[2])
            assert "__main__" in Path(module.__file__).read_text()
        elif program == "uvicorn":
            module, _, attr = command[1].partition(":")
            assert callable(getattr(importlib.import_module(module), attr))
            assert "--factory" in command
        elif program == "celery":
            module = command[command.index("-A") + 1]
            assert importlib.import_module(module).app.main == "internet_explorer"
        else:
            assert program in scripts, program
            subcommand = " ".join(command[1:])
            assert "corpus serve" in subcommand


def test_dockerfile_installs_what_pyproject_pins():
    text = (ROOT / "Dockerfile").read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pins = [d for d in deps if d.split("==")[0] in ("torch", "torchvision")]
    line = next(x for x in text.splitlines() if "pip install" in x and "torch==" in x)
    assert sorted(re.findall(r"torch\S*==\S+", line)) == sorted(torch_pins)
    assert "pip install -q -e ." in text
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in setup  # the same order as setup.sh
    for folder in ("ie_engine", "app", "worker", "migrations", "templates", "static"):
        assert f"COPY {folder} {folder}" in text
