# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The environment a child process (helm, a docker credential helper) is given: what it needs, nothing else.

A module runs with the whole environment of ansible-playbook (or of the AWX job), and that often holds secrets of
other tools: DATAROBOT_API_TOKEN, REGISTRY_PASSWORD, cloud keys, anything a user exported under any name. A child
inherits all of it by default, and any process of the same user can read it in /proc/<pid>/environ while the child
runs. So a child gets an allow-list instead: the variables every program needs (PATH, HOME, locale, temporary
directory, proxies, TLS trust, XDG directories) plus those of its own kind (helm's HELM_* and KUBECONFIG; the
variables of the kubeconfig credential plugins and credential helpers of the clouds: AWS_*, GOOGLE_*, CLOUDSDK_*,
AZURE_*, AAD_*). A variable is also withheld when its value holds a secret the module learned (a chart value, say),
whatever its name.

A module of another collection (kubernetes.core.helm) starts its helm with its own whole environment, which a play
cannot narrow: a task's `environment:` can only set variables. `withheld_names` gives the names this allow-list would
leave out, so that such a task sets each of them to an empty string (the withheld_env lookup); the variables that
module itself needs (its Python's, and kubernetes.core's K8S_AUTH_*) are allowed besides helm's.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable, Mapping

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

# What any program may need: where to find programs and home, locale, temporary files, proxies and TLS trust.
COMMON_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
})
COMMON_PREFIXES = ("LC_", "XDG_")
# The clouds' own credential plugins (aws eks get-token, gke-gcloud-auth-plugin, kubelogin, docker-credential-ecr-
# login / -gcr / -acr-env) read these; a kubeconfig or a docker config can name such a plugin.
CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "AZURE_", "AAD_")

HELM_NAMES = frozenset({"KUBECONFIG", "KUBECACHEDIR"})
HELM_PREFIXES = ("HELM_",) + CLOUD_PREFIXES
# pass (GnuPG), secretservice (D-Bus) and the clouds' helpers.
CREDENTIAL_HELPER_NAMES = frozenset({"DBUS_SESSION_BUS_ADDRESS", "GNUPGHOME", "GPG_AGENT_INFO", "GPG_TTY", "DISPLAY"})
CREDENTIAL_HELPER_PREFIXES = ("PASSWORD_STORE_",) + CLOUD_PREFIXES
# What kubernetes.core.helm itself needs besides helm's: its connection options (K8S_AUTH_*) and its Python.
HELM_MODULE_NAMES = HELM_NAMES | frozenset({"LD_LIBRARY_PATH", "VIRTUAL_ENV"})
HELM_MODULE_PREFIXES = HELM_PREFIXES + ("K8S_AUTH_", "PYTHON")
KINDS = {"helm": (HELM_NAMES, HELM_PREFIXES), "helm_module": (HELM_MODULE_NAMES, HELM_MODULE_PREFIXES),
         "credential_helper": (CREDENTIAL_HELPER_NAMES, CREDENTIAL_HELPER_PREFIXES)}
MIN_WITHHELD = 8
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a task's `environment:` can set (`NAME='' program`)


class UnknownChildKind(MlopsError):
    """A kind of child that has no allow-list."""


class _Allowed:
    """Which variables of `source` a child keeps: a name on the allow-list, and no withheld secret in the value."""

    def __init__(self, names: Iterable[str], prefixes: Iterable[str], withhold: Iterable[str]) -> None:
        self.names = COMMON_NAMES | frozenset(names)
        self.prefixes = COMMON_PREFIXES + tuple(prefixes)
        self.secrets = [secret for secret in withhold if len(secret or "") >= MIN_WITHHELD]

    def __call__(self, key: str, value: str) -> bool:
        return ((key in self.names or key.startswith(self.prefixes))
                and not any(secret in value for secret in self.secrets))


def child_environment(names: Iterable[str] = (), prefixes: Iterable[str] = (), *,
                      update: Mapping[str, str] | None = None, source: Mapping[str, str] | None = None,
                      withhold: Iterable[str] = ()) -> dict[str, str]:
    """The allowed part of `source` (default: this process's environment), then `update` on top.

    `withhold`: secret strings; a variable from `source` whose value contains one (of MIN_WITHHELD characters or
    more: a shorter one would take PATH away) is left out whatever its name. `update` is what the caller means to
    give, and is never filtered."""
    source = os.environ if source is None else source
    allowed = _Allowed(names, prefixes, withhold)
    env = {key: value for key, value in source.items() if allowed(key, value)}
    env.update(update or {})
    return env


def withheld_names(kind: str, *, source: Mapping[str, str] | None = None, withhold: Iterable[str] = (),
                   keep: Iterable[str] = ()) -> list[str]:
    """The names of `source` (default: this process's environment) that a child of `kind` (a key of KINDS) would not
    be given, apart from those in `keep`; sorted."""
    if kind not in KINDS:
        raise UnknownChildKind(f"Unknown kind of child process {kind!r}: use one of {', '.join(sorted(KINDS))}.")
    source = os.environ if source is None else source
    allowed, kept = _Allowed(*KINDS[kind], withhold), frozenset(keep)
    return sorted(key for key, value in source.items() if key not in kept and not allowed(key, value))


def helm_environment(update: Mapping[str, str] | None = None, *, source: Mapping[str, str] | None = None,
                     withhold: Iterable[str] = ()) -> dict[str, str]:
    """What helm is run with: the common variables, helm's and kubeconfig's, and `update` (the module's settings)."""
    return child_environment(HELM_NAMES, HELM_PREFIXES, update=update, source=source, withhold=withhold)


def credential_helper_environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a docker credential helper (docker-credential-<name> get) is run with."""
    return child_environment(CREDENTIAL_HELPER_NAMES, CREDENTIAL_HELPER_PREFIXES, source=source)


def blanked_environment(kind: str, *, source: Mapping[str, str] | None = None, withhold: Iterable[str] = (),
                        keep: Iterable[str] = ()) -> dict[str, str]:
    """{name: ""} for each withheld name a task's `environment:` can set: Ansible sets them in a shell command line,
    where a name that is no shell identifier (an exported bash function, BASH_FUNC_x%%) would not parse."""
    return {name: "" for name in withheld_names(kind, source=source, withhold=withhold, keep=keep)
            if SHELL_NAME.fullmatch(name)}


class BadChildEnvName(MlopsError):
    """A name for clean_env_argv that a shell could not use as a variable name."""


# The launcher clean_env_argv puts before a program: a Python that builds the program's environment from its own and
# execs the program with it. It reads only its arguments (names, PREFIX_* patterns, then `--` and the program's argv)
# and runs on any Python 3 from 3.4 (-I), whatever the controller's version. Python sets LC_CTYPE itself when the
# locale is C (PEP 538 coercion, which no option turns off): the shell keeps the caller's LC_CTYPE, or its absence,
# in CLEAN_ENV_LC_CTYPE, and the launcher restores it.
LAUNCHER = """\
import errno, os, sys
args = sys.argv[1:]
split = args.index("--") if "--" in args else len(args)
specs, argv = args[:split], args[split + 1:]
if not argv:
    sys.exit("clean_env: no program to run after --")
names = frozenset(spec for spec in specs if not spec.endswith("*"))
prefixes = tuple(spec[:-1] for spec in specs if spec.endswith("*"))
source = dict(os.environ)
source.pop("LC_CTYPE", None)
if "CLEAN_ENV_LC_CTYPE" in source:
    source["LC_CTYPE"] = source.pop("CLEAN_ENV_LC_CTYPE")
env = dict((key, value) for key, value in source.items() if key in names or key.startswith(prefixes))
try:
    os.execvpe(argv[0], argv, env)
except OSError as exc:
    sys.stderr.write("clean_env: cannot run %s: %s\\n" % (argv[0], exc.strerror))
    sys.exit(127 if exc.errno == errno.ENOENT else 126)
"""
# `/bin/sh -c FIND_PYTHON clean_env PYTHON LAUNCHER SPECS... -- PROGRAM ARGS...`: the controller's Python when it is
# there (a local connection's command runs on the controller), else python3 on PATH. Builtins only.
FIND_PYTHON = (
    'py=$1; shift; '
    '[ -x "$py" ] || py=python3; '
    'command -v "$py" >/dev/null 2>&1 || { echo "clean_env: no Python to start the command with: neither the '
    'controller\'s nor python3 is on this host" >&2; exit 127; }; '
    'unset CLEAN_ENV_LC_CTYPE; '
    'if [ -n "${LC_CTYPE+set}" ]; then CLEAN_ENV_LC_CTYPE=$LC_CTYPE; export CLEAN_ENV_LC_CTYPE; fi; '
    'exec "$py" -I -S -c "$@"'
)


def clean_env_argv(extra: Iterable[str] = (), python: str | None = None) -> list[str]:
    """The argv to put before a program's own so that it runs with only the common variables (COMMON_NAMES,
    COMMON_PREFIXES) and `extra` ones: names, or `PREFIX_*` for every variable whose name starts with PREFIX_.

    `/bin/sh -c FIND_PYTHON clean_env PYTHON LAUNCHER NAMES... PREFIX_*... -- PROGRAM ARGS...`: the shell finds a
    Python (`python`, default this controller's own, else python3 on PATH) and execs it with `-I -S` (no PYTHON*
    variable, no site, no user code); LAUNCHER keeps the allowed variables of its environment and execs the program
    with them alone (os.execvpe). Only names are on any command line, never a value: /proc/<pid>/cmdline is readable
    by every local user, so `env -i NAME=value... PROGRAM` would show a proxy's password, say, to all of them. The
    values are read where the command runs and when it runs, and a prefix is matched there too.

    Why not a shell script that unsets what is not allowed and then execs the program: a shell cannot do that
    reliably. bash hands on to its children the variables whose names are no shell identifiers (a secret exported as
    `my.token`), which `unset` cannot name, and dash stops at such a name; a readonly variable (bash's SHELLOPTS,
    taken from the environment) cannot be unset; `export -p` differs between shells and needs a quote-aware parser
    for values holding newlines; and bash exports variables of its own (PWD, SHLVL). A Python builds the program's
    environment from nothing, the way `env -i` did, and Python is there wherever Ansible runs a module."""
    specs = set(COMMON_NAMES) | {f"{prefix}*" for prefix in COMMON_PREFIXES}
    for item in extra:
        name = str(item)
        if not SHELL_NAME.fullmatch(name.removesuffix("*")):
            raise BadChildEnvName(f"{name!r} is not a variable name (or a PREFIX_* of names) a shell can read: use "
                                  "letters, digits and underscores, not starting with a digit.")
        specs.add(name)
    return ["/bin/sh", "-c", FIND_PYTHON, "clean_env", python or sys.executable or "python3", LAUNCHER,
            *sorted(specs), "--"]
