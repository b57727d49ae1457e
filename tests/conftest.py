"""Make `ansible_collections.datarobot_mlops.management_agent` importable from the checkout.

`make setup` links the working tree under .collections/; putting that on the
path lets unit tests import module_utils exactly as Ansible does.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".collections"
if not (COLLECTIONS / "ansible_collections" / "datarobot_mlops" / "management_agent").exists():
    raise RuntimeError("run `make setup` first: it links this checkout as the collection under .collections/")
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: ansible_cli
