"""Manifests as objects addressed by ObjectRef, and drift found and repaired per object."""

from __future__ import annotations

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import MASK, Masker
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_manifest import (
    ABSENT,
    Drift,
    ObjectRef,
    drift_of,
    object_ref,
    parse_manifest,
)

CONFIG = """
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: agent-config
data:
  mode: "on"
---
# only a comment
"""


def test_a_document_without_a_namespace_lives_in_the_release_namespace():
    [document] = parse_manifest(CONFIG)
    ref = object_ref(document, "ns")
    assert ref == ObjectRef("v1", "ConfigMap", "ns", "agent-config")
    assert (ref.kind, ref.name) == ("ConfigMap", "agent-config")


def test_drift_takes_a_plain_tuple_and_names_the_object():
    [document] = parse_manifest(CONFIG)
    [found] = drift_of(("v1", "ConfigMap", "ns", "agent-config"), document, {"data": {"mode": "off"}})
    assert isinstance(found.ref, ObjectRef) and found.object == "ConfigMap/agent-config"
    assert (found.field, found.live, found.desired, found.path) == ("data[mode]", "off", "on", "/data")


def test_a_deleted_object_is_left_to_helm():
    [gone] = drift_of(ObjectRef("v1", "ConfigMap", "ns", "agent-config"), {}, None)
    assert gone.path is None and gone.live == ABSENT


def test_sensitive_drift_is_shown_masked():
    drift = Drift(("v1", "Secret", "ns", "creds"), "data[token]", "bGl2ZQ==", "d2FudA==", "/data", {},
                  sensitive=True)
    assert drift.public(Masker()) == {"object": "Secret/creds", "field": "data[token]", "live": MASK,
                                      "desired": MASK}
