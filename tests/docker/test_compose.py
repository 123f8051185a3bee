"""docker-compose.yml, the image and the Prometheus files, checked without a Docker engine.

``docker compose config`` is not available here (the Docker CLI has no compose plugin and there
is no engine), so the compose file is validated against the Compose Specification JSON schema,
vendored as ``compose-spec.json`` from the ``compose/config/compose_spec.json`` that PyPI's
``docker-compose`` 1.29.2 wheel ships (Apache-2.0). The Prometheus config and rules are checked
with the real ``promtool`` (Debian's ``prometheus`` package, see .ci/system-packages), including
unit tests of the alert rules on synthetic series.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests._servers import unavailable

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
RULES = REPO / "docker" / "prometheus" / "rules.yml"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool", "install Debian's prometheus package (.ci/system-packages)")
    assert path is not None
    return path


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    # The vendored schema names draft 2019-09 by its old http:// id; validate with that draft.
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    validator.validate(compose())
    broken = compose()
    broken["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "whenever"
    broken["services"]["redis"]["helthcheck"] = {}
    assert len(list(validator.iter_errors(broken))) >= 2  # the schema is strict, not decorative


def test_stack_services_start_in_health_gated_order() -> None:
    services = compose()["services"]
    assert {"sharpwatch", "postgres", "redis", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            wanted = condition["condition"]
            if wanted == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency  # a one-shot job
            else:
                assert wanted == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    expected = {
        "sharpwatch": {"postgres", "redis"},
        "prometheus": {"sharpwatch", "sharpwatch-tokens"},
        "grafana": {"prometheus", "postgres"},
    }
    for name, dependencies in expected.items():
        assert set(services[name]["depends_on"]) == dependencies, name
    for name in ("sharpwatch", "postgres", "redis", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name


def test_named_volumes_and_bind_mounts_exist() -> None:
    stack = compose()
    declared = set(stack["volumes"])
    used = set()
    for service in stack["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), source
            else:
                used.add(source)
    assert used == declared
    assert {"postgres-data", "prometheus-data", "grafana-data"} <= declared


def test_service_image_runs_the_repository_dockerfile_with_secrets_from_the_environment() -> None:
    stack = compose()
    service = stack["services"]["sharpwatch"]
    assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    environment = service["environment"]
    assert environment["SHARPWATCH_REDIS_URL"].startswith("redis://redis:")
    assert int(environment["SHARPWATCH_WORKERS"]) > 1
    text = COMPOSE.read_text()
    for secret in ("SHARPWATCH_DB_PASSWORD", "GRAFANA_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in text, secret  # required, never a default
        assert secret in (REPO / "docker" / "env.example").read_text()


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", dockerfile, re.M)
    assert len(stages) >= 2
    assert all("slim" in image for image, _ in stages)
    assert 'pip install ".[postgres]"' in dockerfile
    assert not re.search(r"pip install[^\n]*(torch|hooks|trl|vllm|dev)", dockerfile)
    final = dockerfile[dockerfile.rindex("\nFROM ") :]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user
    assert user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*healthz", final, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".git" in ignored


def test_grafana_mounts_the_provisioning_and_the_dashboards() -> None:
    volumes = compose()["services"]["grafana"]["volumes"]
    assert "./docker/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    provider = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/dashboards/sharpwatch.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./dashboards:{path}:ro" in volumes


def test_prometheus_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # The config names container paths; point them at copies so promtool can open them.
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "token").write_text("swr_example\n")
    config = (
        PROMETHEUS_CONFIG.read_text()
        .replace("/etc/prometheus/rules.yml", str(tmp_path / "rules.yml"))
        .replace("/etc/prometheus/secrets/prometheus-read-token", str(tmp_path / "token"))
    )
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'sharpwatch_run_entropy_nats{{project="p",run="collapsing"}}'
        values: '0.3 0.09x20'
      - series: 'sharpwatch_run_entropy_nats{{project="p",run="healthy"}}'
        values: '0.22x20'
      - series: 'sharpwatch_run_model_collapse_step{{project="p",run="collapsing"}}'
        values: 'NaN NaN 17x20'
      - series: 'sharpwatch_run_model_collapse_step{{project="p",run="healthy"}}'
        values: 'NaN NaN NaN NaN NaN'
      - series: 'sharpwatch_run_non_finite_metrics{{project="p",run="collapsing"}}'
        values: '0 0 0 2x20'
      - series: 'sharpwatch_run_non_finite_metrics{{project="p",run="healthy"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: SharpwatchEntropyFloor
        exp_alerts: []
      - eval_time: 12m
        alertname: SharpwatchEntropyFloor
        exp_alerts:
          - exp_labels: {{severity: critical, rule: entropy_floor, project: p, run: collapsing}}
            exp_annotations:
              summary: "Entropy collapse on p/collapsing"
              description: "Mean token entropy has stayed below the 0.10-nat floor
                for 10 minutes (now 0.090 nats). Stop the run or raise IAC alpha."
      - eval_time: 1m
        alertname: SharpwatchModelCollapseStep
        exp_alerts: []
      - eval_time: 3m
        alertname: SharpwatchModelCollapseStep
        exp_alerts:
          - exp_labels:
              {{severity: critical, rule: model_collapse_step, project: p, run: collapsing}}
            exp_annotations:
              summary: "Model Collapse Step on p/collapsing"
              description: "Reward accuracy fell below 1% at step 17: the pseudo-reward
                no longer agrees with the oracle. Roll back to the best step."
      - eval_time: 4m
        alertname: SharpwatchNonFinite
        exp_alerts:
          - exp_labels: {{severity: critical, rule: non_finite, project: p, run: collapsing}}
            exp_annotations:
              summary: "Non-finite metrics on p/collapsing"
              description: "The newest step reported 2 metric(s) as NaN or infinite."
"""


def test_critical_alert_rules_fire_on_the_exported_series(tmp_path: Path) -> None:
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    result = subprocess.run(
        [promtool(), "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_installs_the_system_packages_the_tests_need() -> None:
    script = REPO / ".ci" / "system-packages"
    assert script.stat().st_mode & 0o111, "must be executable"
    assert "prometheus" in script.read_text()
    assert ".ci/system-packages" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "path",
    [
        "docker/postgres/init-grafana-reader.sh",
        "docker/alertmanager/render.sh",
        ".ci/system-packages",
    ],
)
def test_shell_scripts_parse(path: str) -> None:
    shell = "bash" if path.startswith(".ci") else "sh"
    result = subprocess.run([shell, "-n", str(REPO / path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_alertmanager_config_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        unavailable("amtool", "Debian package prometheus-alertmanager (.ci/system-packages)")
    assert amtool is not None
    config = REPO / "docker" / "alertmanager" / "alertmanager.yml"
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_sends_alerts_to_the_stack_alertmanager() -> None:
    services = compose()["services"]
    assert "alertmanager" in services
    assert "healthcheck" in services["alertmanager"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    environment = services["alertmanager"]["environment"]
    for name in ("ALERTMANAGER_WEBHOOK_URL", "ALERTMANAGER_SLACK_WEBHOOK_URL"):
        assert name in environment
        assert name in (REPO / "docker" / "env.example").read_text()
