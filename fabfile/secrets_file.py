"""The local secrets file (YAML mapping name -> value) that env templates read as ``secrets.NAME``.

The real file is never committed (``secrets.yaml`` and ``.lab/`` are git-ignored);
``secrets.example.yaml`` shows its shape. Every value is masked wherever output goes.

Values are read as the text written in the file, never coerced by YAML: ``012345``
stays ``"012345"`` (not 5349), ``no`` stays ``"no"`` (not False). An empty value or
``~``/``null`` counts as missing; a list or mapping is refused.
"""

from __future__ import annotations

import yaml

from .masking import register_secret
from .templating import TemplateError


class Secrets(dict):
    """A mapping whose missing entries fail with a line naming the file and the key."""

    def __init__(self, values: dict, path: str):
        super().__init__(values)
        self.path = path

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self:
            if self.path is None:
                raise TemplateError(f"secret '{name}' is not set: define {name} in an Ansible Vault file of the "
                                    "inventory, or pass --secrets PATH / set secrets_file")
            raise TemplateError(f"{self.path}: secret '{name}' is missing; add it to the secrets file")
        return self[name]


    def __repr__(self):
        return f"Secrets({self.path}: {len(self)} values)"


def load_secrets(path: str) -> Secrets:
    from .files import read_named_file

    text = read_named_file(path, TemplateError, "secrets file", "pass --secrets PATH (see secrets.example.yaml)")
    try:
        # BaseLoader keeps every scalar as the string written: no int/bool/null coercion.
        data = yaml.load(text, Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise TemplateError(f"{path}:{where} YAML syntax error in the secrets file") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: the secrets file must be a mapping of name: value")
    values = {}
    for name, value in data.items():
        if not isinstance(value, str):
            raise TemplateError(f"{path}: secret '{name}' must be a single value, not a list or mapping")
        if value.strip() in ("", "~", "null", "Null", "NULL"):
            continue  # reported as missing by name if a template needs it
        values[str(name)] = value
    register_secret(list(values.values()))  # secret by origin: masked in every output from now on
    return Secrets(values, path)


def with_vault(secrets, host_vars: dict) -> Secrets:
    """``secrets`` (a Secrets or a plain mapping of them) under the host's variables that come from
    Ansible Vault: an env template's ``secrets.NAME`` is the inventory's vaulted NAME first."""
    from .inventory.model import SecretText

    vaulted = {name: value for name, value in host_vars.items()
               if isinstance(value, SecretText) or getattr(value, "sealed", False)}  # sealed: decrypted if read
    return Secrets({**secrets, **vaulted}, getattr(secrets, "path", None))
