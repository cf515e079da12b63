"""Role defaults that keep listeners private and dangerous APIs off (docs/reliability.md)."""
from __future__ import annotations

import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _yaml(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return yaml.safe_load(f)


def test_prometheus_binds_the_private_address_without_the_lifecycle_api():
    d = _yaml("roles", "monitoring", "defaults", "main.yml")
    assert not d["monitoring_prometheus_listen_address"].startswith(("0.0.0.0", "[::]", ":"))
    assert "llmfleet_private_address" in d["monitoring_prometheus_listen_address"]
    assert d["monitoring_prometheus_lifecycle"] is False
    args = _yaml("roles", "monitoring", "vars", "main.yml")["__monitoring_args"]
    assert "--web.enable-lifecycle" in args and "if monitoring_prometheus_lifecycle" in args


def test_a_public_gateway_requires_tls():
    tasks = _yaml("roles", "gateway", "tasks", "settings.yml")
    that = tasks[0]["ansible.builtin.assert"]["that"]
    assert "gateway_exposure != 'public' or gateway_tls_cert | length > 0" in that
