"""The README's Slack app set-up works as written: its manifest's interactivity request
URL is the route ``vigil alert`` serves for the buttons, with the scope the messages
need, and the variables it exports are the ones Vigil reads the token and the signing
secret from."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from prometheus_client import CollectorRegistry

from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager
from alerting.am.slack_actions import create_app
from vigil.settings import describe_options

REPO = Path(__file__).resolve().parents[2]


def _section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Slack app set-up\n", 1)[1]
    return re.split(r"\n##+ ", section, maxsplit=1)[0]


def test_readme_slack_manifest_points_at_the_endpoint_vigil_serves(tmp_path: Path) -> None:
    section = _section()
    (manifest_text,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    manifest = yaml.safe_load(manifest_text)
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    url = urlsplit(interactivity["request_url"])
    assert url.scheme == "https"  # Slack calls request URLs over HTTPS only
    assert "chat:write" in manifest["oauth_config"]["scopes"]["bot"]

    config = parse_config("route: {receiver: r}\nreceivers: [{name: r}]\n", "am.yml")
    manager = AlertManager(config, tmp_path / "alerts.db", {}, registry=CollectorRegistry())
    try:
        app = create_app(
            manager, signing_secret="s", audit=lambda e: None, registry=CollectorRegistry()
        )
        methods = {r.rule: r.methods or set() for r in app.url_map.iter_rules()}
        assert "POST" in methods.get(url.path, set()), f"{url.path} is not served"
    finally:
        manager.close()


def test_readme_slack_setup_exports_the_variables_vigil_reads() -> None:
    (shell,) = re.findall(r"```sh\n(.*?)```", _section(), flags=re.S)
    exported = re.findall(r"^export (\w+)=", shell, flags=re.M)
    env = {key: var for key, _, var, _ in describe_options()}
    assert exported == [env["alert.slack.token"], env["alert.slack.signing_secret"]]
