# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One way to hide secrets in what the collection returns or says: a Masker.

A Masker learns secrets three ways: by value (a password passed as an argument), by where they sit in
chart values (sensitive key names, or dotted paths the user lists) and by where they sit in manifests
(Secret data, sensitive env entries). Everything it returns, structured or text, has them replaced by
MASK. Every module masks through it, so a secret is hidden the same way everywhere.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import Any, Iterable, Mapping, Sequence

MASK = "********"

# Keys whose values are secrets, and key endings that name a secret rather than hold one
# (`apiSecretName: mlops-api-key`, `secretKeyRef`, `tokenFile`).
SENSITIVE_KEY = re.compile(r"token|passw(or)?d|secret|api[-_]?key|private[-_]?key|credential|^auth$", re.I)
NAMES_A_SECRET = re.compile(r"(name|names|ref|file|path|dir|namespace|enabled|create|mount|url|uri|type|kind)$",
                            re.I)
# Words that carry a credential in a message whose secrets are not known (`password=...`, `token:...`).
CREDENTIAL_WORD = re.compile(r"(password|token)\S*", re.I)


def is_sensitive_key(key: str) -> bool:
    """Whether a key holds a secret (apiToken), not just names one (apiTokenSecretName)."""
    return bool(SENSITIVE_KEY.search(key)) and not NAMES_A_SECRET.search(key)


def masked_scalar(value: Any) -> bool:
    """Whether a value is a scalar worth hiding: booleans and empty values tell nothing."""
    return value is not None and not isinstance(value, (bool, dict, list))


def _b64decode(value: Any) -> str | None:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


class Masker:
    """Finds secrets in values and manifests and masks them in everything the module returns."""

    def __init__(self, secret_paths: Iterable[str] = (), min_length: int = 4) -> None:
        self.paths = {path.strip(".") for path in secret_paths if path.strip(".")}
        self.min_length = min_length
        self.secrets: set[str] = set()

    def add(self, *secrets: str | None) -> "Masker":
        """Secrets known by value (a password given as an argument): hidden whatever their length."""
        self.secrets.update(secret for secret in secrets if secret)
        return self

    def _is_secret_path(self, path: Sequence[str]) -> bool:
        dotted = ".".join(path)
        return (bool(path) and is_sensitive_key(path[-1])) or any(
            dotted == secret or dotted.startswith(secret + ".") for secret in self.paths)

    def _remember(self, value: Any) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                self._remember(item)
        elif isinstance(value, list):
            for item in value:
                self._remember(item)
        elif masked_scalar(value):
            text = str(value)
            if len(text) >= self.min_length:
                self.secrets.add(text)

    def collect_values(self, values: Any, path: tuple[str, ...] = ()) -> None:
        """Learn the secrets of chart values: under sensitive keys or the listed paths."""
        if isinstance(values, Mapping):
            for key, item in values.items():
                here = (*path, str(key))
                if self._is_secret_path(here):
                    self._remember(item)
                else:
                    self.collect_values(item, here)
        elif isinstance(values, list):
            for item in values:
                self.collect_values(item, path)

    def collect_manifest(self, documents: Iterable[Mapping[str, Any]]) -> None:
        """Learn the secrets of rendered objects: Secret data (encoded and decoded) and sensitive env values."""
        for document in documents:
            if document.get("kind") == "Secret":
                for item in (document.get("data") or {}).values():
                    self._remember(item)
                    decoded = _b64decode(item)
                    if decoded is not None:
                        self._remember(decoded)
                self._remember(document.get("stringData") or {})
            self._collect_env(document)

    def _collect_env(self, node: Any) -> None:
        if isinstance(node, Mapping):
            if is_sensitive_key(str(node.get("name", ""))) and "value" in node and len(node) <= 3:
                self._remember(node.get("value"))
            for item in node.values():
                self._collect_env(item)
        elif isinstance(node, list):
            for item in node:
                self._collect_env(item)

    def text(self, text: str) -> str:
        """The text with every known secret replaced, longest first (a secret may contain a shorter one)."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def hide_credential_words(self, text: str) -> str:
        """The text with known secrets and every word that starts like a credential (password=...) masked."""
        return CREDENTIAL_WORD.sub(MASK, self.text(text))

    def values(self, values: Any, path: tuple[str, ...] = ()) -> Any:
        """A copy with every secret value replaced by ********."""
        if isinstance(values, Mapping):
            masked = {}
            for key, item in values.items():
                here = (*path, str(key))
                masked[key] = self._mask_all(item) if self._is_secret_path(here) else self.values(item, here)
            return masked
        if isinstance(values, list):
            return [self.values(item, path) for item in values]
        return self.text(values) if isinstance(values, str) else values

    def _mask_all(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: self._mask_all(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._mask_all(item) for item in value]
        return MASK if masked_scalar(value) else value

    def manifest_object(self, document: Mapping[str, Any]) -> Any:
        """A manifest object fit to show: Secret data, sensitive keys and env values masked."""
        masked = copy.deepcopy(dict(document))
        if masked.get("kind") == "Secret":
            for section in ("data", "stringData"):
                if isinstance(masked.get(section), Mapping):
                    masked[section] = {key: MASK for key in masked[section]}
        return self._mask_tree(masked)

    def _mask_tree(self, node: Any) -> Any:
        if isinstance(node, Mapping):
            env_like = "value" in node and is_sensitive_key(str(node.get("name", ""))) and len(node) <= 3
            out = {}
            for key, item in node.items():
                if (env_like and key == "value") or (is_sensitive_key(str(key)) and masked_scalar(item)):
                    out[key] = MASK if masked_scalar(item) else item
                else:
                    out[key] = self._mask_tree(item)
            return out
        if isinstance(node, list):
            return [self._mask_tree(item) for item in node]
        return self.text(node) if isinstance(node, str) else node


# kubeconfig keys that hold key material under names Masker does not take for secrets (it does token, password...)
KUBECONFIG_KEY_DATA = ("client-key-data", "client-certificate-data")


def all_strings(value: Any, min_length: int = 4) -> set[str]:
    """Every scalar in `value` as text, of the length a Masker keeps: for values whose secrets cannot be told."""
    if isinstance(value, dict):
        return set().union(*(all_strings(item, min_length) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(all_strings(item, min_length) for item in value))
    text = str(value) if masked_scalar(value) else ""
    return {text} if len(text) >= min_length else set()


def kubeconfig_secrets(kubeconfig: Mapping[str, Any]) -> set[str]:
    """A kubeconfig dictionary's tokens, passwords, auth-provider secrets, exec env secrets and client keys.

    (kubernetes.core 6 hides some of them too, but only once validation passed, and older releases not at all.)
    """
    masker = Masker()
    masker.collect_values(kubeconfig)      # token, password, client-secret, id-token, refresh-token ...
    masker.collect_manifest([kubeconfig])  # exec: env: [{name: AWS_SECRET_ACCESS_KEY, value: ...}]
    found = set(masker.secrets)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key in KUBECONFIG_KEY_DATA:
                    found.update(all_strings(item, masker.min_length))
                else:
                    walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(kubeconfig)
    return found
