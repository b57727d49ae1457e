"""ReleaseGuard on a fake helm, without a Lease store: history, the recovery command, undoing a revision."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    ChartSource,
    HelmError,
    Revision,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import (
    InvalidReleaseRequest,
    ReleaseBusy,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_guard import (
    ReleaseGuard,
    chart_is,
    last_deployed,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import ReleaseSpec

sys.path.insert(0, os.path.dirname(__file__))
from test__release_reconciler import rig, spec  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position


def revision(number: int, status: str) -> Revision:
    return Revision(number, status, "agent-1.0.0", "1.0", "2026-11-25T12:00:00Z", "")


class Helm:
    def __init__(self, *statuses: str) -> None:
        self.revisions = [revision(i + 1, status) for i, status in enumerate(statuses)]
        self.calls: list[tuple] = []

    def history(self, name, namespace):
        return list(self.revisions)

    def rollback(self, name, namespace, number, **options):
        self.calls.append(("rollback", number, options["timeout"]))

    def uninstall(self, name, namespace, **options):
        self.calls.append(("uninstall", options["wait"]))


def guard_for(helm: Helm) -> ReleaseGuard:
    return ReleaseGuard(helm, ReleaseSpec("bosun", "ns", ChartSource("/chart"), {}, wait=False, wait_timeout=7))


def test_an_uninstalled_release_has_no_history_and_no_latest_revision():
    guard = guard_for(Helm("superseded", "uninstalled"))
    assert guard.history() == [] and guard.latest() is None
    assert guard_for(Helm("superseded", "deployed")).latest().revision == 2


def test_the_recovery_command_goes_back_to_the_last_deployed_revision_or_uninstalls():
    helm = Helm("superseded", "deployed", "failed")
    guard = guard_for(helm)
    assert guard.fix_command(last_deployed(helm.revisions)) == "helm rollback bosun 2 -n ns"
    assert guard.fix_command(None) == "helm uninstall bosun -n ns"


def test_undoing_a_revision_rolls_back_when_one_worked_and_uninstalls_when_none_did():
    helm = Helm("deployed", "failed")
    guard_for(helm).roll_back_or_uninstall(2, last_deployed(helm.revisions))
    assert helm.calls == [("rollback", 1, 7)]
    first = Helm("failed")
    guard_for(first).roll_back_or_uninstall(1, last_deployed(first.revisions))
    assert first.calls == [("uninstall", False)]


def test_a_pending_revision_of_someone_else_is_refused_with_the_way_out():
    helm = Helm("deployed", "pending-upgrade")
    guard = guard_for(helm)
    assert guard.interrupted(helm.revisions) is None  # no Lease store: nothing is known to be ours
    with pytest.raises(ReleaseBusy, match=r"status pending-upgrade, revision 2.*recover with: helm rollback bosun 1"):
        guard.refuse_pending(helm.revisions)
    guard.refuse_pending(helm.revisions[:1])


def test_a_release_written_by_another_client_is_named_and_left_alone():
    helm = Helm("deployed")
    guard = guard_for(helm)
    planned = helm.history("bosun", "ns")
    helm.revisions.append(revision(2, "deployed"))
    guard.hold(planned)  # without a Lease store there is nothing to hold: helm's own checks remain
    assert guard.lock is None
    message = str(guard.overtaken(HelmError("failed", "Error: release: already exists")))
    assert "(Error: release: already exists). It is now at revision 2 (deployed). Nothing was rolled back" in message


# ---------------------------------------------------------------- a release of another chart under our name

@pytest.mark.parametrize("chart, name, same", [
    ("datarobot-management-agent-1.2.0", "datarobot-management-agent", True),
    ("datarobot-management-agent-1.2.0-rc.1+b7", "datarobot-management-agent", True),
    ("datarobot-management-agent-extra-1.2.0", "datarobot-management-agent", False),
    ("tiny-0.1.0", "datarobot-management-agent", False),
    ("agent-v2.0.0", "agent", True),
])
def test_a_chart_column_names_its_chart(chart, name, same):
    assert chart_is(chart, name) is same


def test_a_release_of_another_chart_is_neither_upgraded_nor_uninstalled_unless_forced(rig):
    helm, cluster, reconciler = rig
    helm.chart = "web-shop-2.0.0"
    reconciler().present(spec())  # someone installed their own chart under the name this run is given
    helm.chart = "agent-1.0.0"
    wanted = r"Release bosun in namespace ns holds chart web-shop-2.0.0, not chart agent: .*Set force: true.*release_name"
    for check_mode in (True, False):
        with pytest.raises(InvalidReleaseRequest, match=wanted):
            reconciler(check_mode).present(spec(replicas=2))
    with pytest.raises(InvalidReleaseRequest, match="holds chart web-shop-2.0.0, not chart agent"):
        reconciler().absent(spec(), True, 10)
    assert helm.calls == ["upgrade"] and helm.revisions[-1]["chart"] == "web-shop-2.0.0"
    forced = reconciler().present(replace(spec(replicas=2), force=True))
    assert forced.action == "upgrade" and helm.revisions[-1]["chart"] == "agent-1.0.0"
    helm.chart = "web-shop-2.0.0"
    reconciler().present(replace(spec(), force=True))
    assert reconciler().absent(replace(spec(), force=True), True, 10).action == "uninstall" and helm.revisions == []
