"""The one masking rule and the one escaping rule for everything shown or written.

Masking: a variable is secret when its name (any case, at any depth of a mapping)
speaks of a password, passwd, passphrase, secret, token, credential or private key,
or ends in ``_key``/``_pass``; its value is masked wherever it appears. Values that are
secret by where they come from (every secrets-file value, every vault-decrypted value)
are registered with ``register_secret`` and masked everywhere from then on. Text that
quotes input (an error line echoing a ``--set`` item, an SSH option string) also has its
inline secrets masked: ``NAME=VALUE``/``NAME: VALUE`` with a secret NAME, ``sshpass -p X``,
``--password X``, ``scheme://user:X@``.

Escaping: control characters coming from outside (host names, users, values, remote
output) are shown as ``\\x1b``-style escapes, so nothing printed can move the cursor,
recolour the terminal or fake a line.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

MASK = "********"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary words

_SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)|secret|token|credential|private[\W_]?key|(?:^|[\W_])(?:key|pass|pwd)$",
    re.IGNORECASE,
)
# A name saying where a secret lives (secrets_file, ansible_ssh_private_key_file, vault_password_file) or a
# file's name (secrets.yaml) holds or is a path, not a secret: masking it would hide the path an error line must name.
_WHERE_A_SECRET_LIVES = re.compile(r"[\W_](?:file|path|dir)$|\.(?:ya?ml|json|ini|txt|cfg|conf|pem|crt|env)$", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"""(?<![\w./-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>["']?\s*[:=]\s*["']?)(?P<value>[^\s"',;}]+)""")
_INLINE = [
    # sshpass -p VALUE; --password VALUE, --token=VALUE
    re.compile(r"(?P<name>\bsshpass\s+-p\s*)(?P<value>\S+)"),
    re.compile(r"(?P<name>--(?:password|passwd|token|secret)[= ]\s*)(?P<value>\S+)", re.IGNORECASE),
    # URL userinfo: scheme://user:VALUE@host
    re.compile(r"(?P<name>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<value>[^/\s@]+)(?=@)", re.IGNORECASE),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_registered: set = set()
_lock = threading.Lock()


def is_secret_key(name, extra_names=()) -> bool:
    """True when a variable (or nested key) named ``name`` holds a secret (the rule above) or is listed."""
    if not isinstance(name, str):
        return False
    return _named_like_a_secret(name) or name in extra_names


@lru_cache(maxsize=4096)  # a large inventory asks about the same few hundred names for every host
def _named_like_a_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _WHERE_A_SECRET_LIVES.search(name)


def pieces_of(value) -> list:
    """The strings to look for when masking ``value``: it whole, each of its lines, its JSON-escaped form."""
    if value is None or isinstance(value, bool) or getattr(value, "sealed", False):
        return []  # a sealed vault value (inventory.vault.Sealed) is registered when a task opens it
    if isinstance(value, dict):
        return [piece for item in value.values() for piece in pieces_of(item)]
    if isinstance(value, (list, tuple, set)):
        return [piece for item in value for piece in pieces_of(item)]
    return list(_text_pieces(str(value)))


@lru_cache(maxsize=4096)  # hosts of one inventory share most of their values
def _text_pieces(text: str) -> tuple:
    import json

    found = [text, *text.splitlines(), json.dumps(text)[1:-1], escaped(text)]
    return tuple(piece for piece in found if len(piece.strip()) >= MIN_SECRET_LENGTH)


def register_secret(value) -> None:
    """Mask ``value`` (a string, number, list or mapping of them) in every output from now on.

    Call it for every value that is secret by its origin: the secrets file, a vault-decrypted value.
    """
    with _lock:
        _registered.update(pieces_of(value))


def registered() -> list:
    with _lock:
        return sorted(_registered, key=len, reverse=True)


def forget_registered() -> None:
    """Tests only: start from an empty registry."""
    with _lock:
        _registered.clear()


def mask_registered(text: str) -> str:
    """``text`` with the registered secrets masked (no inline rule: for free-form output)."""
    for secret in registered():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_values(text: str, values=()) -> str:
    """``text`` with registered secrets and ``values`` masked; no inline rule (for lines we write ourselves
    that hold no value, such as a secrets file's changed key names)."""
    text = str(text)
    for secret in sorted({*registered(), *values}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_text(text: str, values=()) -> str:
    """``text`` with registered secrets, ``values`` and inline secrets (``NAME=VALUE``...) masked."""
    text = mask_values(text, values)
    # NAME=VALUE, NAME: VALUE, "NAME": "VALUE" where NAME (its last dotted part: not a file's suffix) is secret
    text = _ASSIGNMENT.sub(lambda m: m.group("name") + m.group("sep") + MASK if is_secret_key(m.group("name").rsplit(".", 1)[-1])
                           else m.group(0), text)
    for pattern in _INLINE:
        text = pattern.sub(lambda m: m.group("name") + MASK, text)
    return text


def mask_data(value, extra_names=(), values=()):
    """``value`` with every secret-named entry (any case, any depth) replaced by the mask and every
    string masked as ``mask_text`` does. Keys are kept (a diff says *which* secret changed)."""
    if isinstance(value, dict):
        return {(mask_text(k, values) if isinstance(k, str) else k):
                (MASK if is_secret_key(k, extra_names) else mask_data(item, extra_names, values))
                for k, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(item, extra_names, values) for item in value]
    if isinstance(value, str):
        return mask_text(value, values)
    return value


def secret_values(variables: dict, extra_names=()) -> list:
    """Every value held under a secret name in ``variables``, at any depth (what a masker must look for)."""
    found = []
    if isinstance(variables, dict):
        for key, item in variables.items():
            if is_secret_key(key, extra_names):
                found += pieces_of(item)
            else:
                found += secret_values(item, extra_names)
    elif isinstance(variables, (list, tuple)):
        for item in variables:
            found += secret_values(item, extra_names)
    return found


def escaped(text, keep_newlines: bool = False) -> str:
    """``text`` with control characters (and bidi overrides) shown as ``\\xNN``/``\\uNNNN`` escapes."""
    text = str(text)
    if text.isprintable():  # the common case: every character the patterns match is unprintable
        return text
    pattern = _CONTROL if keep_newlines else _CONTROL_ANY

    def escape(match):
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return pattern.sub(escape, text)


def shown(value, limit: int = 120) -> str:
    """How an error message quotes input: masked, escaped, shortened, in quotes."""
    text = escaped(mask_text(value if isinstance(value, str) else repr(value)))
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'"


def safe_line(text, keep_newlines: bool = False) -> str:
    """A whole line for the terminal or a log: masked, then escaped."""
    return escaped(mask_text(text), keep_newlines=keep_newlines)
