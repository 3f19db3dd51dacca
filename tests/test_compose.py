"""docker-compose.yml, the Dockerfile, the Procfile and the variable table of README.md agree with the
settings and with SPEC §7.

No Docker engine is needed: the files are read, and the settings are imported in a child process with the
environment compose gives the app containers (some variables, the S3 ones, are read only when DPP_STORAGE=s3,
so this process's own `READ` cannot know them all). Every checker is also run against a bad snippet, so that
each check is seen to fail when it should.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings

from config.env import LIBRARY_VARS, READ
from tests.helpers.children import python_child
from tests.processes import PROCFILE, ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
ENV_SECTION = "### Environment variables"

# SPEC §7: the process and the program that runs it.
SPEC_PROGRAMS = {"api": "gunicorn config.wsgi", "worker": "celery -A config worker", "beat": "celery -A config beat"}
PROCFILE_PROCESSES = {"web": "api", "worker": "worker", "beat": "beat"}
EXPECTED_SERVICES = {"postgres", "redis", "api", "worker", "beat"}
APP_SERVICES = {"migrate", "api", "worker", "beat"}
STAND_IN_IMAGES = ("motoserver/moto", "localstack/localstack")
# Read by the interpreter, pip and Django themselves: the Dockerfile may set these besides the app's own.
IMAGE_VARS = frozenset(
    {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_ROOT_USER_ACTION",
        "DJANGO_SETTINGS_MODULE",
    }
)
_INTERPOLATION = re.compile(r"\$\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)")

# Imports the settings with the environment it is given, and reports what they read and made of it.
_CHILD = """
import json
import django
django.setup()
from django.conf import settings
from config.celery import app
from config.env import READ
database = settings.DATABASES["default"]
print(json.dumps({
    "read": sorted(READ),
    "production": settings.PRODUCTION,
    "storage_backend": settings.STORAGES["results"]["BACKEND"],
    "storage_options": settings.STORAGES["results"]["OPTIONS"],
    "broker_url": app.conf.broker_url,
    "transport_options": app.conf.broker_transport_options,
    "database": [database["ENGINE"], database["HOST"]],
}, default=str))
"""


# --- helpers ----------------------------------------------------------------------------------------------


def load(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict), "the compose file is not a YAML mapping"
    assert isinstance(document.get("services"), dict), "the compose file has no services"
    return document


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this repository's image: built here, or the image of a service built here."""
    services: dict[str, dict[str, Any]] = compose["services"]
    built_images = {service.get("image") for service in services.values() if "build" in service}
    return {
        name: service
        for name, service in services.items()
        if "build" in service or (service.get("image") is not None and service.get("image") in built_images)
    }


def stand_in(compose: dict[str, Any]) -> str | None:
    """The name of the service that stands in for SQS and S3."""
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith(STAND_IN_IMAGES):
            return str(name)
    return None


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment in either compose form (mapping, or a list of NAME=value / NAME)."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {str(name): None if value is None else str(value) for name, value in raw.items()}
    pairs = (str(item).partition("=") for item in raw)
    return {name: value if sep else None for name, sep, value in pairs}


def interpolated_names(value: str) -> set[str]:
    """Names of the host variables that compose substitutes into a value (`$$` is a literal dollar)."""
    return {match["braced"] or match["bare"] for match in _INTERPOLATION.finditer(value.replace("$$", ""))}


def resolve(value: str) -> str:
    """The value compose passes on when the host sets none of the variables (a fresh checkout, no .env)."""

    def substitute(match: re.Match[str]) -> str:
        op = match["op"] or ""
        if op.endswith("?"):
            raise ValueError(f"{match['braced']} must be set on the host: {match['arg']}")
        return match["arg"] if op.endswith("-") else ""

    return "$".join(_INTERPOLATION.sub(substitute, part) for part in value.split("$$"))


def resolved_environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: resolve(value or "") for name, value in environment(service).items()}


def variable_problems(compose: dict[str, Any], known: set[str]) -> list[str]:
    """Every variable an app service sets, or takes from the host, must be one something reads."""
    problems = []
    for name, service in sorted(app_services(compose).items()):
        if "env_file" in service:
            problems.append(f"{name}: env_file hides its variables from this check")
        for variable, value in sorted(environment(service).items()):
            if variable not in known:
                problems.append(f"{name}: {variable} is read by nothing")
            problems.extend(
                f"{name}: {variable} interpolates {host} which is read by nothing"
                for host in sorted(interpolated_names(value or ""))
                if host not in known
            )
    return problems


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def runs(words: list[str], program: str) -> bool:
    expected = program.split()
    return words[: len(expected)] == expected


def command_problems(compose: dict[str, Any]) -> list[str]:
    services = compose["services"]
    problems = []
    for name, program in SPEC_PROGRAMS.items():
        if name not in services:
            problems.append(f"{name}: missing")
        elif not runs(command_words(services[name]), program):
            problems.append(f"{name}: does not run `{program}`")
    return problems


def procfile_problems(text: str) -> list[str]:
    entries = {}
    for line in text.splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            entries[name.strip()] = shlex.split(command)
    problems = []
    for entry, process in PROCFILE_PROCESSES.items():
        program = SPEC_PROGRAMS[process]
        if entry not in entries:
            problems.append(f"{entry}: missing")
        elif not runs(entries[entry], program):
            problems.append(f"{entry}: does not run `{program}`")
    return problems


def _condition(service: dict[str, Any], dependency: str) -> str | None:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return "service_started" if dependency in depends_on else None
    entry = depends_on.get(dependency)
    return None if entry is None else str((entry or {}).get("condition", "service_started"))


def dependency_problems(compose: dict[str, Any]) -> list[str]:
    """The processes start once the data stores are healthy and the one-shot migrate step has succeeded."""
    services = compose["services"]
    stand_in_name = stand_in(compose)
    candidates = ["postgres", "redis"] + ([stand_in_name] if stand_in_name else [])
    backing = sorted(name for name in candidates if name in services)
    problems = [
        f"{name}: no healthcheck" for name in backing if not (services[name].get("healthcheck") or {}).get("test")
    ]
    wanted = {"migrate": "service_completed_successfully", **dict.fromkeys(backing, "service_healthy")}
    for name in SPEC_PROGRAMS:
        for dependency, condition in wanted.items():
            found = _condition(services.get(name, {}), dependency)
            if found != condition:
                problems.append(f"{name}: depends on {dependency} with {found}, not {condition}")
    return problems


def _endpoint(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def endpoint_problems(env: dict[str, str], stand_in_name: str | None) -> list[str]:
    """Production mode, with SQS and S3 both pointed, over plain http, at the stand-in."""
    broker, s3 = env.get("CELERY_BROKER_URL", ""), env.get("AWS_S3_ENDPOINT_URL", "")
    checks = {
        "DPP_ENV is not production": env.get("DPP_ENV") != "production",
        "CELERY_BROKER_URL is not sqs://": not broker.startswith("sqs://"),
        "the broker is not the stand-in": _endpoint(broker)[0] != stand_in_name,
        "DPP_SQS_IS_SECURE is not off": env.get("DPP_SQS_IS_SECURE", "").lower() not in {"0", "false", "no", "off"},
        "DPP_STORAGE is not s3": env.get("DPP_STORAGE") != "s3",
        "AWS_S3_ENDPOINT_URL is not http on the stand-in": not s3.startswith("http://")
        or _endpoint(s3)[0] != stand_in_name,
        "SQS and S3 are not on the same port": _endpoint(broker)[1] != _endpoint(s3)[1],
    }
    return [problem for problem, failed in checks.items() if failed]


def settings_under(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the settings in a child whose environment is only `env` (plus PATH), as in a container."""
    child_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    return python_child(["-c", _CHILD], child_env)


def dockerfile_problems(text: str) -> list[str]:
    lines = text.replace("\\\n", " ").splitlines()
    instructions = [line.strip().split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    by_kind: dict[str, list[str]] = {}
    for kind, *rest in instructions:
        by_kind.setdefault(kind.upper(), []).append(rest[0] if rest else "")
    env_names = {word.split("=", 1)[0] for value in by_kind.get("ENV", []) for word in shlex.split(value)}
    cmd = by_kind.get("CMD", ["[]"])[-1]
    words = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    users = by_kind.get("USER", [])
    checks = {
        "not based on python:3.12-slim": by_kind.get("FROM", [""])[0].split()[:1] != ["python:3.12-slim"],
        "runs as root": not users or users[-1].split(":")[0] in {"root", "0"},
        "no HEALTHCHECK on /health": not any("/health" in check for check in by_kind.get("HEALTHCHECK", [])),
        "CMD is not gunicorn config.wsgi on 0.0.0.0:8000": not runs(words, SPEC_PROGRAMS["api"])
        or "0.0.0.0:8000" not in words,
        "PROMETHEUS_MULTIPROC_DIR is not set": "PROMETHEUS_MULTIPROC_DIR" not in env_names,
        "collectstatic does not run at build": not any("collectstatic" in run for run in by_kind.get("RUN", [])),
    }
    problems = [problem for problem, failed in checks.items() if failed]
    unknown = env_names - READ - LIBRARY_VARS - IMAGE_VARS
    return problems + [f"ENV {name} is read by nothing" for name in sorted(unknown)]


def variables(read: set[str]) -> set[str]:
    """The variables in `read` less the `<NAME>_FILE` variants (DPP_URL_CA_FILE is a variable of its own)."""
    return {name for name in read if not (name.endswith("_FILE") and name.removesuffix("_FILE") in read)}


def documented_variables(markdown: str) -> set[str]:
    """The names in the first column of the table under ENV_SECTION."""
    section = markdown.partition(ENV_SECTION)[2].partition("\n## ")[0]
    rows = (line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))
    return {name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}


def doc_problems(documented: set[str], known: set[str]) -> list[str]:
    missing = [f"{name} is not documented" for name in sorted(known - documented)]
    return missing + [f"{name} is documented but read by nothing" for name in sorted(documented - known)]


# --- the real files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def children(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the settings read and made of each app service's environment (one child per distinct env)."""
    seen: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    out = {}
    for name, service in sorted(app_services(compose).items()):
        env = resolved_environment(service)
        key = frozenset(env.items())
        if key not in seen:
            result = settings_under(env)
            assert result.returncode == 0, f"{name}: the settings refuse its environment:\n{result.stderr[-2000:]}"
            seen[key] = json.loads(result.stdout.strip().splitlines()[-1])
        out[name] = seen[key]
    return out


def test_compose_has_the_services_and_a_stand_in(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= EXPECTED_SERVICES
    assert stand_in(compose) is not None
    assert set(app_services(compose)) >= APP_SERVICES
    assert not set(app_services(compose)) & {"postgres", "redis", stand_in(compose)}


def test_every_variable_compose_sets_is_read(compose: dict[str, Any], children: dict[str, dict[str, Any]]) -> None:
    assert settings.ROOT_URLCONF == "config.urls"  # the settings of this process are imported: READ is filled
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "DPP_STORAGE", "DJANGO_SECRET_KEY_FILE"} <= READ
    known = set(READ) | set(LIBRARY_VARS)
    for child in children.values():
        known |= set(child["read"])
    assert variable_problems(compose, known) == []


def test_the_settings_accept_the_compose_environment(
    compose: dict[str, Any], children: dict[str, dict[str, Any]]
) -> None:
    assert set(children) >= APP_SERVICES
    for name, child in children.items():
        assert child["production"] is True, name
        assert child["storage_backend"] == "storages.backends.s3.S3Storage", name
        assert child["storage_options"]["bucket_name"], name
        assert child["database"] == ["config.adapters.postgresql", "postgres"], name  # Django's, cheaper health check
        assert child["broker_url"].startswith("sqs://"), name
        assert child["transport_options"]["is_secure"] is False, name
        assert "AWS_STORAGE_BUCKET_NAME" in child["read"], name
    stand_in_name = stand_in(compose)
    for name, service in app_services(compose).items():
        assert endpoint_problems(resolved_environment(service), stand_in_name) == [], name


def test_readme_lists_every_variable(children: dict[str, dict[str, Any]]) -> None:
    read = set(READ).union(*(child["read"] for child in children.values()))
    documented = documented_variables(README.read_text(encoding="utf-8"))
    assert doc_problems(documented, variables(read) | set(LIBRARY_VARS)) == []


def test_process_commands_match_spec(compose: dict[str, Any]) -> None:
    assert command_problems(compose) == []


def test_procfile_runs_the_same_programs() -> None:
    assert procfile_problems(PROCFILE.read_text(encoding="utf-8")) == []


def test_processes_wait_for_their_dependencies(compose: dict[str, Any]) -> None:
    assert dependency_problems(compose) == []


def test_dockerfile() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


# --- each check fails on a bad file -----------------------------------------------------------------------

_BAD_COMPOSE = """
x-env: &env
  DATABASE_URL: postgres://db/dpp
  DPP_TYPO: "1"
services:
  postgres:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: anything
  moto:
    image: motoserver/moto:5.2.3
  api:
    build: .
    image: dpp:bad
    command: python manage.py runserver 0.0.0.0:8000
    environment:
      <<: *env
      SECRET: ${NOT_READ_EITHER:-x}
    depends_on: [postgres]
  worker:
    image: dpp:bad
    command: ["celery", "-A", "config", "beat"]
    env_file: .env
    environment:
      - CELERY_BROKER_URL=sqs://localhost:4566
      - WEB_CONCURRENCY
      - LEFTOVER=1
"""


def test_checkers_reject_a_bad_compose_file() -> None:
    bad = load(_BAD_COMPOSE)
    assert set(app_services(bad)) == {"api", "worker"}
    known = {"DATABASE_URL", "CELERY_BROKER_URL", "WEB_CONCURRENCY"}
    assert variable_problems(bad, known) == [
        "api: DPP_TYPO is read by nothing",
        "api: SECRET is read by nothing",
        "api: SECRET interpolates NOT_READ_EITHER which is read by nothing",
        "worker: env_file hides its variables from this check",
        "worker: LEFTOVER is read by nothing",
    ]
    assert command_problems(bad) == [
        "api: does not run `gunicorn config.wsgi`",
        "worker: does not run `celery -A config worker`",
        "beat: missing",
    ]
    assert "api: depends on migrate with None, not service_completed_successfully" in dependency_problems(bad)
    assert "api: depends on postgres with service_started, not service_healthy" in dependency_problems(bad)
    assert "postgres: no healthcheck" in dependency_problems(bad)
    assert "beat: depends on moto with None, not service_healthy" in dependency_problems(bad)
    broker_elsewhere = {"DPP_ENV": "local", "CELERY_BROKER_URL": "sqs://localhost:4566", "DPP_SQS_IS_SECURE": "1"}
    assert endpoint_problems(broker_elsewhere, stand_in(bad)) == [
        "DPP_ENV is not production",
        "the broker is not the stand-in",
        "DPP_SQS_IS_SECURE is not off",
        "DPP_STORAGE is not s3",
        "AWS_S3_ENDPOINT_URL is not http on the stand-in",
        "SQS and S3 are not on the same port",
    ]


def test_interpolation_is_resolved_as_compose_does() -> None:
    assert resolve("${A:-fallback}/${B-x}/${C}/$D/$$E") == "fallback/x///$E"
    assert interpolated_names("${A:-x} $B $${C}") == {"A", "B"}
    with pytest.raises(ValueError, match="REQUIRED must be set"):
        resolve("${REQUIRED:?set it}")


def test_the_settings_refuse_a_bad_environment(compose: dict[str, Any]) -> None:
    env = resolved_environment(compose["services"]["api"])
    without_secret = {name: value for name, value in env.items() if name != "DJANGO_SECRET_KEY"}
    refused = settings_under(without_secret)
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required when DPP_ENV=production" in refused.stderr
    not_a_boolean = settings_under({**env, "DPP_SQS_IS_SECURE": "maybe"})
    assert not_a_boolean.returncode != 0
    assert "DPP_SQS_IS_SECURE='maybe' is not a boolean" in not_a_boolean.stderr


def test_doc_checker_rejects_a_bad_table() -> None:
    bad = (
        "## 2. Other\n| `NOT_HERE` | x | y |\n"
        f"{ENV_SECTION}\n| variable | default | meaning |\n|---|---|---|\n"
        "| `DATABASE_URL` | `sqlite:///…` | the `DPP_VAR_DIR` is mentioned here, not listed |\n"
        "| `DPP_TYPO`, `REDIS_URL` | empty | x |\n## 4. Next\n| `ALSO_NOT_HERE` | x | y |\n"
    )
    assert documented_variables(bad) == {"DATABASE_URL", "DPP_TYPO", "REDIS_URL"}
    assert variables({"DPP_URL_CA_FILE", "DPP_URL_CA_FILE_FILE", "REDIS_URL", "REDIS_URL_FILE"}) == {
        "DPP_URL_CA_FILE",
        "REDIS_URL",
    }
    assert doc_problems(documented_variables(bad), {"DATABASE_URL", "REDIS_URL", "DPP_VAR_DIR"}) == [
        "DPP_VAR_DIR is not documented",
        "DPP_TYPO is documented but read by nothing",
    ]


def test_procfile_checker_rejects_a_bad_procfile() -> None:
    bad = "web: python manage.py runserver\n# beat: celery -A config beat\nworker: celery -A config worker -c 2\n"
    assert procfile_problems(bad) == ["web: does not run `gunicorn config.wsgi`", "beat: missing"]


def test_dockerfile_checker_rejects_a_bad_dockerfile() -> None:
    bad = (
        "FROM python:3.11\n"
        "ENV PYTHONUNBUFFERED=1 \\\n    DPP_NOT_A_SETTING=1\n"
        "RUN pip install -r requirements.txt\n"
        'CMD ["python", "manage.py", "runserver"]\n'
    )
    assert dockerfile_problems(bad) == [
        "not based on python:3.12-slim",
        "runs as root",
        "no HEALTHCHECK on /health",
        "CMD is not gunicorn config.wsgi on 0.0.0.0:8000",
        "PROMETHEUS_MULTIPROC_DIR is not set",
        "collectstatic does not run at build",
        "ENV DPP_NOT_A_SETTING is read by nothing",
    ]


def test_every_gunicorn_runs_without_the_control_socket(compose: dict[str, Any]) -> None:
    """gunicorn 27 opens a control socket under $HOME by default: in the image HOME does not exist (an ERROR line at
    every start), and the gunicorns of one host would share one socket path."""
    dockerfile_cmd = next(
        line.split(None, 1)[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    )
    procfile_web = next(
        line.partition(":")[2] for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    commands = {
        "Dockerfile": json.loads(dockerfile_cmd),
        "compose api": command_words(compose["services"]["api"]),
        "Procfile web": shlex.split(procfile_web),
    }
    assert {name: "--no-control-socket" in words for name, words in commands.items()} == dict.fromkeys(commands, True)
