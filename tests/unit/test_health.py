"""The scheduler check of /healthz, on a stand-in node."""

from __future__ import annotations

from types import SimpleNamespace

from cdss_node.monitor import health
from cdss_node.monitor.telemetry import Telemetry


def node(telemetry: Telemetry):
    return SimpleNamespace(config=SimpleNamespace(series=SimpleNamespace(check_interval_s=0.1)),
                           telemetry=telemetry, scheduler=SimpleNamespace(running=True))


def test_a_node_that_just_started_is_not_called_dead_before_its_first_check():
    """CI queried /healthz 70 ms after a start with a 0.1 s interval and got 503 'never
    ran': the first check was merely not due yet."""
    telemetry = Telemetry()
    assert health._scheduler(node(telemetry)).ok
    telemetry.started -= 60                       # a minute up and never ran: dead
    check = health._scheduler(node(telemetry))
    assert not check.ok and check.detail == "the series completion check never ran"
    telemetry.beat("completion")
    assert health._scheduler(node(telemetry)).ok
