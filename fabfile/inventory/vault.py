"""Ansible Vault (format 1.1 and 1.2, AES256): whole files and inline ``!vault`` values.

The cipher is the ``cryptography`` package's (PBKDF2-HMAC-SHA256, HMAC-SHA256, AES-256-CTR,
PKCS7), composed exactly as ansible-core's VaultAES256 composes it; nothing is hand-written.
Passwords come as Ansible takes them (``Vault.from_options``): ``--vault-id label@source``
(a file, an executable printing the password, or ``prompt``), ``--vault-password-file``,
``ANSIBLE_VAULT_PASSWORD_FILE``, ``--ask-vault-pass`` (no echo). A blob names its label in
format 1.2; the secret of that label is tried first, then the others, as Ansible does.
Decryption is on demand and cached per blob: an inline value stays ``Sealed`` until a task reads it, so a
vaulted value no task uses needs no password (a vault-encrypted vars file opens with the hosts that load it).
Every decrypted text is registered with ``masking.register_secret`` and so masked in every output.
"""

from __future__ import annotations

import binascii
import getpass
import os
import subprocess
import threading
from dataclasses import dataclass, field

from ..masking import register_secret
from .model import InventoryError, SecretText

HEADER = "$ANSIBLE_VAULT"
DEFAULT_LABEL = "default"
SCRIPT_TIMEOUT = 30  # seconds a password script may take


_decrypting = threading.Lock()


class VaultError(InventoryError):
    """A vault that cannot be opened: one line naming the file."""


@dataclass(frozen=True)
class VaultText:
    """An inline ``!vault`` value, kept encrypted until a host that uses it is resolved."""

    ciphertext: str
    source: str  # the file it was read from (errors name it)
    line: int = 0

    def __str__(self):  # never the plain text; the ciphertext is what ansible-inventory prints too
        return self.ciphertext


def is_vault_text(text: str) -> bool:
    return text.lstrip().startswith(HEADER + ";")


def _parse(text: str, where: str) -> tuple:
    """(label or None, salt, hmac hex, ciphertext) of a vault text; one error line if it is not one."""
    lines = text.strip().splitlines()
    header = [part.strip() for part in lines[0].split(";")] if lines else []
    if len(header) < 3 or header[0] != HEADER or header[1] not in ("1.1", "1.2"):
        raise VaultError(f"{where}: not an Ansible Vault text (format 1.1 or 1.2 expected); re-encrypt it with ansible-vault")
    if header[2] != "AES256":
        raise VaultError(f"{where}: vault cipher {header[2]!r} is not supported (AES256 only)")
    label = header[3] if header[1] == "1.2" and len(header) > 3 else None
    try:
        body = binascii.unhexlify("".join(line.strip() for line in lines[1:]))
        salt, mac, ciphertext = body.split(b"\n", 2)
        return label, binascii.unhexlify(salt), mac, binascii.unhexlify(ciphertext)
    except (ValueError, binascii.Error):
        raise VaultError(f"{where}: the vault text is damaged (not the hex ansible-vault writes); "
                         "restore it or encrypt it again") from None


def _keys(password: bytes, salt: bytes) -> tuple:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=80, salt=salt, iterations=10000).derive(password)
    return derived[:32], derived[32:64], derived[64:80]


def _decrypt(password: bytes, salt: bytes, mac_hex: bytes, ciphertext: bytes) -> bytes | None:
    """The plain bytes, or None when the HMAC does not match (wrong password, or tampered text)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.hmac import HMAC

    key, mac_key, counter = _keys(password, salt)
    check = HMAC(mac_key, hashes.SHA256())
    check.update(ciphertext)
    try:
        check.verify(binascii.unhexlify(mac_hex))
    except (InvalidSignature, binascii.Error, ValueError):
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        return None


@dataclass
class Vault:
    """The vault secrets given on the command line, in Ansible's order, and the blobs opened so far."""

    secrets: list = field(default_factory=list)  # [(label, password bytes)]
    opened: dict = field(default_factory=dict)  # vault text -> plain text

    @classmethod
    def from_options(cls, vault_ids=(), password_files=(), ask=False, environ=None) -> "Vault":
        """``--vault-id`` values first, then ``--vault-password-file`` values and ANSIBLE_VAULT_PASSWORD_FILE,
        then the ``--ask-vault-pass`` prompt, as ansible-core orders them."""
        environ = os.environ if environ is None else environ
        slugs = [_slug(item) for item in vault_ids or ()]
        files = list(password_files or ())
        if environ.get("ANSIBLE_VAULT_PASSWORD_FILE"):
            files.append(environ["ANSIBLE_VAULT_PASSWORD_FILE"])
        slugs += [(DEFAULT_LABEL, path) for path in files]
        if ask:
            slugs.append((DEFAULT_LABEL, "prompt"))
        return cls([(label, _password(label, source)) for label, source in slugs])

    def decrypt(self, text: str, where: str) -> str:
        """A vault text's plain text (registered as a secret); one error line naming ``where`` otherwise."""
        if text in self.opened:
            return self.opened[text]
        with _decrypting:  # a play's threads may open one value at once: one key derivation, one result
            return self.opened.get(text) or self._decrypt_new(text, where)

    def _decrypt_new(self, text: str, where: str) -> str:
        label, salt, mac, ciphertext = _parse(text, where)
        if not self.secrets:
            raise VaultError(f"{where}: encrypted with Ansible Vault, and no vault password was given; pass "
                             "--vault-password-file PATH, --vault-id LABEL@SOURCE or --ask-vault-pass")
        # Its label's secrets first (a 1.1 blob has none: the default-labelled ones, the likeliest), then the
        # others, as Ansible tries them; the order only spares key derivations (the HMAC picks the password).
        first = label or DEFAULT_LABEL
        ordered = [s for s in self.secrets if s[0] == first] + [s for s in self.secrets if s[0] != first]
        for _, password in ordered:
            plain = _decrypt(password, salt, mac, ciphertext)
            if plain is not None:
                break
        else:
            tried = ", ".join(dict.fromkeys(s[0] for s in ordered))
            raise VaultError(f"{where}: cannot decrypt the vault{f' (label {label})' if label else ''} with the "
                             f"vault password(s) given ({tried}): wrong password, or the file was altered (HMAC "
                             "mismatch); check the password or restore the file")
        try:
            result = plain.decode("utf-8")
        except UnicodeDecodeError:
            raise VaultError(f"{where}: the decrypted vault is not UTF-8 text") from None
        register_secret(result)
        self.opened[text] = result
        return result


def _slug(item: str) -> tuple:
    """``label@source`` -> (label, source); a bare source has the label ``default``."""
    label, sep, source = str(item).partition("@")
    if not sep:
        return DEFAULT_LABEL, label
    if not source:
        raise InventoryError(f"--vault-id '{item}': expected LABEL@SOURCE (a file, a script or 'prompt')")
    return label or DEFAULT_LABEL, source


def _password(label: str, source: str) -> bytes:
    """One vault password: asked without echo, read from a file (stripped), or printed by an executable."""
    if source in ("prompt", "prompt_ask_vault_pass"):
        question = "Vault password: " if label == DEFAULT_LABEL else f"Vault password ({label}): "
        try:
            answer = getpass.getpass(question).encode()
        except EOFError:
            answer = b""
        if not answer:
            raise InventoryError(f"vault password ({label}): nothing was entered; give it again or use --vault-password-file")
        return answer
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise InventoryError(f"{source}: vault password file not found; pass --vault-password-file PATH")
    if os.access(path, os.X_OK):
        return _script_password(path, label)
    try:
        with open(path, "rb") as handle:
            password = handle.read().strip()
    except OSError as exc:
        raise InventoryError(f"{source}: cannot read the vault password file ({exc.strerror})") from None
    if not password:
        raise InventoryError(f"{source}: the vault password file is empty")
    return password


def _script_password(path: str, label: str) -> bytes:
    """An executable password file prints the password; a ``*-client`` script gets ``--vault-id LABEL``."""
    command = [path]
    if os.path.splitext(os.path.basename(path))[0].endswith("-client"):
        command += ["--vault-id", label]
    try:
        done = subprocess.run(command, capture_output=True, timeout=SCRIPT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError(f"{path}: the vault password script did not run ({exc.__class__.__name__}); "
                             "check that it is executable and answers") from None
    if done.returncode != 0:
        raise InventoryError(f"{path}: the vault password script exited {done.returncode}; run it by hand to see why")
    password = done.stdout.strip(b"\r\n")
    if not password:
        raise InventoryError(f"{path}: the vault password script printed nothing")
    return password


# The vault options of this command line (set once by the task wrapper); the Vault is built on first use,
# inside the task, so a bad password file is one error line like any other inventory problem.
_options: dict = {}
_current: list = []


def use_options(vault_ids=(), password_files=(), ask=False) -> None:
    """Remember ``--vault-id`` / ``--vault-password-file`` / ``--ask-vault-pass`` for every inventory load."""
    _options.clear()
    _options.update(vault_ids=list(vault_ids or ()), password_files=list(password_files or ()), ask=bool(ask))
    _current.clear()


def current() -> Vault:
    """The command line's vault (ANSIBLE_VAULT_PASSWORD_FILE alone when no option was given)."""
    if not _current:
        _current.append(Vault.from_options(**_options))
    return _current[0]


class Sealed:
    """A value kept closed until something reads it, as Ansible 2.19 keeps an inline vault (EncryptedString):
    reading it as text, a number or a collection (a role's template, a setting, a comparison) calls ``open``;
    copying the host's variables, masking them or listing them does not. Errors opening it are the one
    ``InventoryError`` line, raised where the task reads the value (its plan, before any host changes)."""

    sealed = True  # what masking and the variable schema look for (they do not import the inventory)

    def open(self):
        raise NotImplementedError

    def __str__(self):
        return str(self.open())

    def __format__(self, spec):
        return format(self.open(), spec)

    def __eq__(self, other):
        return self.open() == (other.open() if isinstance(other, Sealed) else other)

    def __hash__(self):
        return hash(self.open())

    def __getattr__(self, name):  # str methods (.split, .startswith...): a use of the value
        if name.startswith("_") or not hasattr(str, name):
            raise AttributeError(name)
        return getattr(self.open(), name)

    def _use(operation):
        return lambda self, *args: operation(self.open(), *args)

    __len__, __iter__, __bool__ = _use(len), _use(iter), _use(bool)
    __int__, __float__ = _use(int), _use(float)
    __contains__ = _use(lambda value, item: item in value)
    __getitem__ = _use(lambda value, key: value[key])
    __add__, __mod__ = _use(lambda value, other: value + other), _use(lambda value, other: value % other)
    __radd__ = _use(lambda value, other: other + value)
    del _use


class SealedVault(Sealed):
    """An inline ``!vault`` value of a host: decrypted (and registered as a secret) on first use."""

    def __init__(self, text: VaultText, vault: Vault):
        self.text, self.vault = text, vault

    @property
    def ciphertext(self) -> str:
        return self.text.ciphertext

    def open(self) -> "VaultPlain":
        return VaultPlain(self.vault.decrypt(self.text.ciphertext, f"{self.text.source}: line {self.text.line}"))

    def __repr__(self):
        return f"<vault value of {self.text.source}: line {self.text.line}>"


def sealed(value, vault: Vault):
    """``value`` with every inline ``!vault`` text inside it a ``SealedVault`` (decrypted on use, never templated)."""
    if isinstance(value, VaultText):
        return SealedVault(value, vault)
    if isinstance(value, list):
        return [sealed(item, vault) for item in value]
    if isinstance(value, dict):
        return {key: sealed(item, vault) for key, item in value.items()}
    return value


def holds_vault(value) -> bool:
    if isinstance(value, VaultText):
        return True
    if isinstance(value, list):
        return any(holds_vault(item) for item in value)
    if isinstance(value, dict):
        return any(holds_vault(item) for item in value.values())
    return False


class VaultPlain(SecretText):
    """A decrypted inline vault value: a secret, and never templated (as in ansible-core 2.19)."""


def secret_values(value):
    """``value`` (a vault-encrypted file's data) with every string a SecretText, every value registered."""
    if isinstance(value, dict):
        return {key: secret_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [secret_values(item) for item in value]
    if value is not None and not isinstance(value, bool):
        register_secret(value)
    return SecretText(value) if isinstance(value, str) and not isinstance(value, SecretText) else value
