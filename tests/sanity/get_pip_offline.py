"""Stand-in for pypa's get-pip.py, which ansible-test downloads from a host we cannot reach.

ansible-test runs it inside a fresh venv with pip's command line (e.g.
`pip==24.2 --no-setuptools`); we bootstrap pip from Python's bundled ensurepip,
then let that pip install what was asked from the package index we can reach.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True, default_pip=True)
# ensurepip hides the pip configuration (PIP_CONFIG_FILE=/dev/null) for its own
# run; the install below must see it (it names the index's CA certificate).
os.environ.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]))
