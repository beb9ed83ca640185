"""The config object: YAML, env overrides, and start-up errors that name the key."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from monitor.foundation.config import ConfigError, load_config

pytestmark = pytest.mark.fast  # no store, server or model

REPO = Path(__file__).resolve().parent.parent


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.clickhouse.url == "chdb://./var/clickhouse"
    assert cfg.server.port == 8080 and cfg.retention.days == 90
    assert cfg.ingest.max_future_skew == dt.timedelta(minutes=5)


def test_committed_example_is_valid():
    cfg = load_config(REPO / "monitor.yaml", env={})
    assert cfg.ingest.max_body_bytes == 32 * 2**20
    assert {p.model for p in cfg.pricing} >= {"gpt-4o", "gpt-4o-mini"}


def test_env_overrides_file(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("server: {port: 9000}\nclickhouse: {url: 'chdb://./x'}\n")
    cfg = load_config(env={"MONITOR_CONFIG": str(f), "MONITOR_CLICKHOUSE_URL": "http://u:p@ch:8123/db",
                           "MONITOR_RETENTION_TEXT_DAYS": "7", "MONITOR_PRIVACY_REDACT": "email, ip"})
    assert cfg.server.port == 9000
    assert cfg.clickhouse.url == "http://u:p@ch:8123/db"
    assert cfg.retention.text_days == 7
    assert cfg.privacy.redact == ["email", "ip"]


@pytest.mark.parametrize("yaml_text, env, message", [
    ("server: {prot: 1}", {}, "config key 'server.prot': unknown key"),
    ("nonsense: {}", {}, "config key 'nonsense': unknown key"),
    ("jobs: {lease: 0s}", {}, "config key 'jobs.lease': must be at least 3s"),
    ("server: {port: 99999}", {}, "config key 'server.port'"),
    ("retention: {days: zero}", {}, "config key 'retention.days'"),
    ("ingest: {text_over_limit: drop}", {}, "config key 'ingest.text_over_limit'"),
    ("ingest: {max_future_skew: soon}", {}, "config key 'ingest.max_future_skew'"),
    ("ingest: {max_body_bytes: 12 parsecs}", {}, "config key 'ingest.max_body_bytes'"),
    ("privacy: {redact: [email, ssn]}", {}, "config key 'privacy.redact.1'"),
    ("pricing: [{model: m, input_per_mtok: -1, output_per_mtok: 1}]", {}, "config key 'pricing.0.input_per_mtok'"),
    ("", {"MONITOR_CLICKHOUSE_URL": "mysql://x"}, "config key 'clickhouse.url'"),
    ("", {"MONITOR_SERVER_PORTT": "1"}, "environment variable MONITOR_SERVER_PORTT: unknown config key"),
    ("- a list", {}, "top level must be a mapping"),
    ("server: [1", {}, "not valid YAML"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, env, message):
    f = tmp_path / "m.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(f, env=env)
    assert message in str(err.value)


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"MONITOR_CONFIG": str(tmp_path / "nope.yaml")})


def test_durations_and_sizes(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("ingest: {max_future_skew: 90s, max_body_bytes: 512KiB}\n")
    cfg = load_config(f, env={})
    assert cfg.ingest.max_future_skew == dt.timedelta(seconds=90)
    assert cfg.ingest.max_body_bytes == 512 * 1024
