"""Reading docker build and push output: the captured logs in data/build_logs (see its README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._build_log import (
    BuildStatus,
    parse_build_log,
    tail,
)

LOGS = Path(__file__).parent / "data" / "build_logs"


def log(name: str) -> str:
    return (LOGS / f"{name}.log").read_text()


def upto(text: str, marker: str) -> str:
    """The log as it was when the line holding `marker` had just been written."""
    end = text.index(marker)
    return text[:text.index("\n", end) + 1]


def test_nothing_written_yet_is_starting():
    assert parse_build_log("") == BuildStatus()
    assert parse_build_log(log("podman_make_push")[:40]).phase == "starting"  # "make: Entering ..." not ended yet


@pytest.mark.parametrize("marker, step", [("STEP 1/5: FROM scratch", 1), ("STEP 3/5: LABEL", 3),
                                          ("STEP 5/5: ENTRYPOINT", 5)])
def test_podman_steps_as_the_build_goes(marker, step):
    status = parse_build_log(upto(log("podman_make_push"), marker))
    assert (status.phase, status.step, status.steps) == ("building", step, 5)


def test_a_build_line_still_being_written_is_not_read():
    text = upto(log("podman_make_push"), "STEP 2/5")
    assert parse_build_log(text + "STEP 3/5: LAB").step == 2


def test_podman_build_done_then_pushed_with_its_digest_and_no_layer_lines():
    text = log("podman_make_push")
    built = parse_build_log(upto(text, "Successfully built"))
    assert (built.phase, built.steps) == ("built", 5)
    pushing = parse_build_log(upto(text, "The push refers to repository"))
    assert pushing.phase == "pushing" and pushing.layers == {}
    done = parse_build_log(text)
    assert done.phase == "pushed" and done.steps == 5
    assert done.digest == "sha256:8b53383d8db487477b130237f5130c3a4e9431d74c888c4226e02ca0a3a5cc1b"
    assert done.last_line.startswith("make: Leaving directory")


def test_build_tag_push_for_a_path_the_makefile_cannot_name():
    status = parse_build_log(log("podman_make_build_tag_push"))
    assert (status.phase, status.step, status.steps) == ("pushed", 5, 5)
    assert status.digest.startswith("sha256:ebba34c7")


def test_a_push_alone_and_a_build_alone():
    assert parse_build_log(log("podman_push_no_layer_lines")).phase == "pushed"
    alone = parse_build_log(log("podman_build_two_layers"))
    assert (alone.phase, alone.steps) == ("built", 4)


def test_docker_layer_lines_count_done_mounted_and_already_there():
    text = log("docker_cli_push_layers")
    waiting = parse_build_log(upto(text, "a1b2c3d4e5f6: Waiting"))
    assert len(waiting.layers) == 5 and waiting.layers_done == 0
    midway = parse_build_log(upto(text, "b2f9e1c07a33: Pushed"))
    assert (midway.layers_done, midway.layers_mounted, midway.layers_existing) == (3, 1, 1)
    assert midway.layers["3c1a7f2e9b10"] == "Mounted from datarobot/mlops-tracking-agent"
    done = parse_build_log(text)
    assert (done.phase, done.layers_done, len(done.layers)) == ("pushed", 5, 5)


def test_a_second_push_counts_its_own_layers():
    text = log("docker_cli_push_layers")
    again = text + text.split("\n", 1)[0] + "\n"  # "The push refers to repository [...]" once more
    status = parse_build_log(again)
    assert status.phase == "pushing" and status.layers == {} and status.digest == ""


def test_a_failed_build_stays_at_its_step_and_its_tail_says_why():
    text = log("podman_build_fails")
    status = parse_build_log(text)
    assert (status.phase, status.step, status.steps) == ("building", 3, 4)
    said = tail(text, lines=2)
    assert said.startswith("STEP 3/4: COPY missing.txt") and "no such file or directory" in said


def test_carriage_returns_split_lines_as_a_terminal_would():
    text = "Sending build context to Docker daemon  2.048kB\r\rStep 1/3 : FROM scratch\r\n ---> Running in 1\r\n"
    status = parse_build_log(text)
    assert (status.phase, status.step, status.steps) == ("building", 1, 3)


def test_classic_docker_and_buildkit_plain_step_lines():
    # Written here in the shapes Docker's classic builder and BuildKit's plain progress print (no daemon of either
    # on the rig): "Step n/m : ...", "#N [n/m] ...", "#N [stage n/m] ...", "#N naming to ...".
    classic = parse_build_log("Step 4/12 : RUN make\n ---> Running in 3f2a\n")
    assert (classic.step, classic.steps) == (4, 12)
    buildkit = "#5 [1/3] FROM docker.io/library/debian\n#6 [builder 2/3] RUN make\n#6 DONE 0.4s\n"
    assert (parse_build_log(buildkit).step, parse_build_log(buildkit).steps) == (2, 3)
    assert parse_build_log(buildkit + "#9 naming to reg/x:1 done\n").phase == "built"


def test_lines_that_only_look_like_layers_before_a_push_are_ignored():
    status = parse_build_log("STEP 1/2: FROM scratch\n0123456789ab: Pushed\n")
    assert status.phase == "building" and status.layers == {}


def test_tail_keeps_the_last_non_empty_lines_within_a_width():
    text = "".join(f"line {n}\n\n" for n in range(40))
    assert tail(text, lines=3) == "line 37\nline 38\nline 39"
    assert len(tail("x" * 5000 + "\n", width=100)) == 100
