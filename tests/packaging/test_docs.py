"""`make docs`: antsibull-docs renders a page for every module and role, with no documentation error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_every_module_and_role_gets_a_page(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(BIN / "antsibull-docs"), "collection", "--use-current", "--fail-on-error",
                           "--dest-dir", str(tmp_path), "datarobot_mlops.management_agent"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = tmp_path / "collections" / "datarobot_mlops" / "management_agent"
    modules = {path.stem for path in (REPO / "plugins" / "modules").glob("*.py") if path.stem != "__init__"}
    roles = {path.name for path in (REPO / "roles").iterdir() if (path / "meta" / "argument_specs.yml").exists()}
    assert modules and roles
    wanted = {f"{name}_module.rst" for name in modules} | {f"{name}_role.rst" for name in roles}
    missing = sorted(wanted - {page.name for page in pages.glob("*.rst")})
    assert not missing, missing
    for name in modules:
        text = (pages / f"{name}_module.rst").read_text()
        assert "Parameters" in text and "Return Values" in text, name
