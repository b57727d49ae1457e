"""The lines a user reads while the agent images build, and the watch over their async jobs."""

from __future__ import annotations

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._build_log import parse_build_log
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._build_progress import (
    BuildJob,
    BuildWatchTimeout,
    failure_message,
    job_seconds,
    progress_line,
    summary_line,
    watch_builds,
)
from test__build_log import log, upto

IMAGE = "reg:5000/datarobot/mlops-management-agent:9.2.0"


def test_a_line_per_phase_with_what_the_output_tells():
    text = log("podman_make_push")
    assert progress_line(IMAGE, parse_build_log(""), 3) == f"{IMAGE}: starting, 3s"
    assert progress_line(IMAGE, parse_build_log(upto(text, "STEP 3/5")), 80) == \
        f"{IMAGE}: building, step 3 of 5, 1m20s"
    assert progress_line(IMAGE, parse_build_log(upto(text, "Successfully built")), 85) == \
        f"{IMAGE}: built (5 steps), 1m25s"
    assert progress_line(IMAGE, parse_build_log(upto(text, "The push refers")), 90) == f"{IMAGE}: pushing, 1m30s"
    assert progress_line(IMAGE, parse_build_log(text), 91) == f"{IMAGE}: pushed, 1m31s"


def test_docker_layers_show_in_the_push_line_and_the_summary():
    text = log("docker_cli_push_layers")
    midway = parse_build_log(upto(text, "b2f9e1c07a33: Pushed"))
    assert progress_line(IMAGE, midway, 100) == \
        f"{IMAGE}: pushing, 3 of 5 layers done (1 mounted, 1 already there), 1m40s"
    assert summary_line(IMAGE, parse_build_log(log("podman_make_push") + text), 104.6) == \
        f"{IMAGE}: built and pushed in 1m45s (5 build steps; 5 layers: 1 mounted, 1 already there)"


def test_the_summary_says_only_what_is_known():
    assert summary_line(IMAGE, parse_build_log(log("podman_make_push")), 4.2) == \
        f"{IMAGE}: built and pushed in 4s (5 build steps)"
    assert summary_line(IMAGE, parse_build_log(""), 61) == f"{IMAGE}: built in 1m01s"


def test_a_build_that_pushed_nothing_is_not_said_to_have_pushed():
    built_only = log("podman_make_push").split("docker push ")[0]  # the Makefile's build target alone
    assert summary_line(IMAGE, parse_build_log(built_only), 4.2) == f"{IMAGE}: built in 4s (5 build steps)"


@pytest.mark.parametrize("delta, seconds", [("0:00:04.250000", 4.25), ("1:02:03.5", 3723.5), ("", 9.0),
                                            ("soon", 9.0)])
def test_the_time_taken_is_the_commands_own_delta(delta, seconds):
    assert job_seconds({"delta": delta}, 9.0) == seconds


class Jobs:
    """Async jobs as async_status and slurp would show them: each log grows a captured piece at a time."""

    def __init__(self, scripts: dict[str, list[str]], ends: dict[str, dict]) -> None:
        self.scripts, self.ends, self.polls = scripts, ends, {jid: 0 for jid in scripts}

    def poll(self, job: BuildJob) -> dict:
        self.polls[job.jid] += 1
        if self.polls[job.jid] >= len(self.scripts[job.jid]):
            return {"finished": 1, **self.ends[job.jid]}
        return {"finished": 0, "started": 1}

    def read(self, job: BuildJob) -> str | None:
        pieces = self.scripts[job.jid]
        return pieces[min(self.polls[job.jid], len(pieces)) - 1] or None


def clock_and_sleep():
    now = [0.0]
    return (lambda: now[0]), (lambda seconds: now.__setitem__(0, now[0] + seconds))


def test_watch_shows_a_line_per_running_build_then_each_summary():
    text = log("podman_make_push")
    pieces = ["", upto(text, "STEP 2/5"), upto(text, "Successfully built"), upto(text, "The push refers"), text]
    jobs = Jobs({"a": pieces, "b": pieces[:3] + [text]},
                {"a": {"rc": 0, "delta": "0:00:21.0"}, "b": {"rc": 0, "delta": "0:00:16.0"}})
    shown: list[str] = []
    clock, sleep = clock_and_sleep()
    watched = [BuildJob("a", "reg/a:1", "/l/a.log"), BuildJob("b", "reg/b:1", "/l/b.log")]
    watch_builds(watched, jobs.poll, jobs.read, shown.append, interval=5, timeout=60, sleep=sleep, clock=clock)
    assert shown == ["reg/a:1: starting, 0s", "reg/b:1: starting, 0s",
                     "reg/a:1: building, step 2 of 5, 5s", "reg/b:1: building, step 2 of 5, 5s",
                     "reg/a:1: built (5 steps), 10s", "reg/b:1: built (5 steps), 10s",
                     "reg/a:1: pushing, 15s", "reg/b:1: built and pushed in 16s (5 build steps)",
                     "reg/a:1: built and pushed in 21s (5 build steps)"]
    assert [job.seconds for job in watched] == [21.0, 16.0]


def test_a_failed_build_is_returned_with_its_log_and_named_with_its_last_lines():
    text = log("podman_build_fails")
    jobs = Jobs({"a": ["", text]}, {"a": {"rc": 1, "failed": True, "msg": "non-zero return code"}})
    shown: list[str] = []
    clock, sleep = clock_and_sleep()
    [job] = watch_builds([BuildJob("a", IMAGE, "/l/a.log")], jobs.poll, jobs.read, shown.append, interval=5,
                         timeout=60, sleep=sleep, clock=clock)
    assert shown == [f"{IMAGE}: starting, 0s"]  # no summary for a failed build
    message = failure_message([job])
    assert message.startswith(f"Building and pushing {IMAGE} failed (exit status 1); the build's last lines:\n")
    assert "no such file or directory" in message and "DOCKER_HOST" in message


def test_a_build_still_going_after_the_timeout_fails_the_watch_with_its_last_lines():
    text = upto(log("podman_make_push"), "STEP 4/5")
    jobs = Jobs({"a": [text] * 100}, {"a": {"rc": 0}})
    clock, sleep = clock_and_sleep()
    with pytest.raises(BuildWatchTimeout, match=r"still going after 20s.*mlops_agent_images_build_timeout") as caught:
        watch_builds([BuildJob("a", IMAGE, "/l/a.log")], jobs.poll, jobs.read, lambda line: None, interval=5,
                     timeout=20, sleep=sleep, clock=clock)
    assert "STEP 4/5: COPY" in str(caught.value)
