"""Jinja2 rendering of ``templates/<role>/...``: a missing variable fails before any upload.

Jinja2 is imported on the first render, so tasks that render nothing start faster.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import quote

from . import values

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


class TemplateError(Exception):
    """One line naming the template and what is wrong with it."""


def env_value(value) -> str:
    """A value for a systemd EnvironmentFile that the service receives byte for byte.

    Double-quoted, with the four characters systemd unescapes there (``"`` ``\\`` `````
    ``$``) escaped; control characters (a newline would add a line) are refused.
    """
    text = values.text("env value", value)
    escaped = "".join("\\" + ch if ch in '"\\`$' else ch for ch in text)
    return f'"{escaped}"'


def url_credential(value) -> str:
    """A user name or password percent-encoded for the userinfo part of a URL."""
    return quote(values.text("URL credential", value), safe="")


def shell_quote(value) -> str:
    """A value as one POSIX shell word (``shell.q``), for scripts rendered from templates."""
    from .shell import q

    return q(values.text("shell value", value))


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        # Compiled templates are kept between runs (a no-op run then skips ~35 ms of compiling). Jinja's
        # default cache directory is per user, mode 0700, and refused if someone else owns it.
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["env_value"] = env_value
    environment.filters["url_credential"] = url_credential
    environment.filters["shell_quote"] = shell_quote
    return environment


def render(template: str, variables: dict) -> str:
    """Render ``templates/<template>`` with ``variables``; raise TemplateError naming what is missing."""
    import jinja2

    try:
        return _environment().get_template(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{template}: undefined variable: {exc.message}; set it in hosts.yaml or the role defaults") from None
    except jinja2.TemplateNotFound:
        raise TemplateError(f"templates/{template}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{template}:{exc.lineno}: template syntax error: {exc.message}") from None
    except values.InvalidValue as exc:
        # A filter (env_value, url_credential) refused a value it cannot know the name of: name it here.
        culprit = _name_with_control_character(variables)
        if culprit and "control character" in str(exc):
            raise values.InvalidValue(f"{culprit} (templates/{template}): contains a control character "
                                      "(newline, tab, ...); one printable line only") from None
        raise


def _name_with_control_character(variables: dict, prefix: str = "") -> str | None:
    """The first variable (``secrets.jwt_secret`` style for nested mappings) holding a control character."""
    for name, value in variables.items():
        if isinstance(value, str) and values.CONTROL_CHARACTER.search(value):
            return f"{prefix}{name}"
        if isinstance(value, dict):
            found = _name_with_control_character(value, f"{prefix}{name}.")
            if found:
                return found
    return None
