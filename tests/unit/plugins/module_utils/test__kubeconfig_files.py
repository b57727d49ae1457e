from __future__ import annotations

import os

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubeconfig_files import (
    first_entry,
    listed_paths,
)


def test_kubeconfig_lists_its_files_in_order_each_once_and_skips_empty_parts():
    listed = os.pathsep.join(["/k/b", "", "/k/a", "/k/b", "/k/c"])
    assert listed_paths(listed, "/home/someone-canary") == ["/k/b", "/k/a", "/k/c"]


def test_without_kubeconfig_the_home_directorys_file_is_read():
    assert listed_paths("", "/home/someone-canary") == ["/home/someone-canary/.kube/config"]


def test_the_first_entry_of_a_name_wins_across_documents_with_its_source():
    first = {"users": ["not-an-entry", {"name": "other"}, {"name": "dev", "user": {"token": "first-canary"}}]}
    second = {"users": [{"name": "dev", "user": {"token": "second-canary"}}], "contexts": None}
    found = first_entry([(first, "first.yaml"), (second, "second.yaml")], "users", "dev")
    assert found == ({"name": "dev", "user": {"token": "first-canary"}}, "first.yaml")
    assert first_entry([(first, "a"), (second, "b")], "contexts", "dev") is None
    assert first_entry([], "users", "dev") is None
