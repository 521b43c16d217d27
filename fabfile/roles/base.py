"""What a role is: its defaults, its steps for one host, its handlers (name -> command)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class HostContext:
    """What a role's steps see of one host: the host, the whole inventory, its merged variables."""

    host: object
    inventory: object
    vars: dict
    # Lines a role wants shown before the play runs (a fallback used, say); never secrets.
    warnings: list = field(default_factory=list)


@dataclass
class Role:
    name: str
    defaults: dict
    steps: Callable[[HostContext], list]
    handlers: Callable[[dict], dict] = lambda variables: {}
