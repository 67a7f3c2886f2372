"""Every file of the public rule collections that `promtool check rules` accepts loads
in `vigil rules check`.

The collections (tests/files/rule_collections, with their licences) are
awesome-prometheus-alerts' dist/rules and kube-prometheus' PrometheusRule specs.
Debian's promtool 2.42 is the oracle; without it this skips locally and fails
under CI=true.

``KNOWN_GAPS`` lists the files that do not load yet, with the first construct
the PromQL evaluator lacks. A file there that starts loading fails the test:
take it off the list, so the list only shrinks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_server

from alerting.rules import check_files

ROOT = Path(__file__).resolve().parents[2] / "tests" / "files" / "rule_collections"
FILES = sorted([*ROOT.rglob("*.yml"), *ROOT.rglob("*.yaml")])

KNOWN_GAPS = {
    "awesome-prometheus-alerts/apache-flink/flink-prometheus-reporter.yml": "function delta()",
    "awesome-prometheus-alerts/blackbox/blackbox-exporter.yml": "function round()",
    "awesome-prometheus-alerts/cassandra/criteo-cassandra-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/cassandra/instaclustr-cassandra-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/couchdb/"
    "gesellix-couchdb-prometheus-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/gitlab-ci/gitlab-built-in-exporter.yml": "function deriv()",
    "awesome-prometheus-alerts/golang/golang-exporter.yml": "function deriv()",
    "awesome-prometheus-alerts/grafana-mimir/embedded-exporter.yml": "function delta()",
    "awesome-prometheus-alerts/host-and-hardware/node-exporter.yml": "function deriv()",
    "awesome-prometheus-alerts/kafka/linkedin-kafka-exporter.yml": "function delta()",
    "awesome-prometheus-alerts/kubernetes/kubestate-exporter.yml": "function predict_linear()",
    "awesome-prometheus-alerts/loki/embedded-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/mongodb/stefanprodan-mgob-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/mysql/mysqld-exporter.yml": "function delta()",
    "awesome-prometheus-alerts/netdata/embedded-exporter.yml": "function predict_linear()",
    "awesome-prometheus-alerts/process-exporter/process-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/prometheus-self-monitoring/"
    "embedded-exporter.yml": "function changes()",
    "awesome-prometheus-alerts/redis/oliver006-redis-exporter.yml": "function delta()",
    "awesome-prometheus-alerts/systemd/systemd-exporter.yml": "function delta()",
    "awesome-prometheus-alerts/thanos/thanos-receiver.yml": "function floor()",
    "kube-prometheus/alertmanager.yaml": "aggregation count_values",
    "kube-prometheus/kubePrometheus.yaml": "aggregation group",
    "kube-prometheus/kubeStateMetrics.yaml": "aggregation stdvar",
    "kube-prometheus/kubernetesControlPlane.yaml": "aggregation topk",
    "kube-prometheus/nodeExporter.yaml": "function predict_linear()",
    "kube-prometheus/prometheus.yaml": "function predict_linear()",
}
"""File → the first PromQL construct it uses that Vigil does not evaluate yet."""


def _key(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        require_server("promtool", "not installed (scripts/install-system-deps installs it)")
    assert found is not None
    return found


def test_collections_are_there_with_their_licences() -> None:
    assert len(FILES) >= 100
    for name in ("awesome-prometheus-alerts", "kube-prometheus"):
        assert (ROOT / name / "LICENSE").stat().st_size > 500
    assert set(KNOWN_GAPS) <= {_key(p) for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=_key)
def test_collection_file_loads_when_promtool_accepts_it(promtool: str, path: Path) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    errors = [i for i in check_files([path]) if i.severity == "error"]
    key = _key(path)
    if done.returncode != 0:
        return  # promtool refuses it: nothing to match (none of the shipped ones today)
    if key in KNOWN_GAPS:
        assert errors, f"{key} loads now: remove it from KNOWN_GAPS"
        assert KNOWN_GAPS[key].split()[-1].rstrip("()") in str(errors[0])
        return
    assert not errors, "\n".join(str(e) for e in errors)
