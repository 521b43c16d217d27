"""Ansible host patterns: ``web-[01:20].example.com``, ``db:2222``, ``[2001:db8::1]:22``."""

from __future__ import annotations

import functools
import re
import string

from .model import InventoryError
from .yaml_reader import MAX_HOSTS

def _ansible_host_grammar() -> dict:
    """Ansible's host/IP grammar (parsing/utils/addresses.py), used to decide whether ``:NN`` is a port."""
    numeric = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
    hexadecimal = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
    alphanumeric = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
    ipv6_part = rf"(?:[0-9a-f]{{1,4}}|{hexadecimal})"
    ipv4_part = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{numeric})"
    label = rf"(?:[\w]|{alphanumeric})(?:[\w_-]|{alphanumeric})*(?<![_-])"
    ipv4_dotted = rf"(?:{ipv4_part}\.){{3}}{ipv4_part}"
    p = ipv6_part
    ipv6 = (
        rf"(?:(?:{p}:){{7}}{p}|(?:{p}:){{1,6}}:|(?:{p}:)(?::{p}){{1,6}}|(?:{p}:){{2}}(?::{p}){{1,5}}|"
        rf"(?:{p}:){{3}}(?::{p}){{1,4}}|(?:{p}:){{4}}(?::{p}){{1,3}}|(?:{p}:){{5}}(?::{p}){{1,2}}|"
        rf"(?:{p}:){{6}}(?::{p})|:(?::{p}){{1,6}}|{p}?::|(?:0:){{6}}{ipv4_dotted}|"
        rf"::(?:ffff:)?{ipv4_dotted}|(?:0:){{5}}ffff:{ipv4_dotted})"
    )
    return {
        "bracketed_hostport": re.compile(r"^\[(.+)\]:([0-9]+)$"),
        "hostport": re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"),
        "host": re.compile(rf"^(?:{ipv4_dotted}|{ipv6}|{label}(?:\.{label})*)$", re.I | re.UNICODE),
    }


@functools.lru_cache(maxsize=1)
def host_patterns() -> dict:
    """The grammar, compiled on first use: only a pattern with a ':' needs it (the IPv6 part takes a few ms)."""
    return _ansible_host_grammar()


def _split_port(pattern: str) -> tuple:
    """``host:port`` / ``[v6]:port`` -> (host, port); the pattern unchanged (no port) if it is no valid host."""
    if ":" not in pattern:  # no port to split off (and the pattern is kept whether it is a valid host or not)
        return pattern, None
    grammar = host_patterns()
    host, port = pattern, None
    for name in ("bracketed_hostport", "hostport"):
        match = grammar[name].match(host)
        if match:
            host, port = match.group(1), int(match.group(2))
    if not grammar["host"].match(host):
        return pattern, None
    return host, port


def _range_values(path: str, pattern: str, bounds: str) -> tuple:
    """The values of one ``[begin:end(:step)]`` range and how to format them (zero padding kept)."""
    parts = bounds.split(":")
    if len(parts) not in (2, 3):
        raise InventoryError(f"{path}: host pattern '{pattern}': a range is [begin:end] or [begin:end:step]")
    begin, end = parts[0] or "0", parts[1]
    step = parts[2] if len(parts) == 3 else "1"
    if not end:
        raise InventoryError(f"{path}: host pattern '{pattern}': a range needs an end value")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and width != len(end):
        raise InventoryError(f"{path}: host pattern '{pattern}': zero-padded begin and end must have the same length")
    try:
        if begin in string.ascii_letters and end in string.ascii_letters:
            first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
            if first > last:
                raise InventoryError(f"{path}: host pattern '{pattern}': a range needs begin <= end")
            return list(string.ascii_letters[first:last + 1:int(step)]), width
        return range(int(begin), int(end) + 1, int(step)), width
    except ValueError:
        raise InventoryError(
            f"{path}: host pattern '{pattern}': range [{bounds}] is not numeric or a-z; write it like [01:20] or [a:f]"
        ) from None


def _expand_pattern(path: str, pattern: str) -> list:
    """``web[01:03:2].x`` -> ["web01.x", "web03.x"], ranges expanded left to right like Ansible."""
    done, todo = [], [pattern]
    while todo:
        name = todo.pop()
        if "[" not in name:
            done.append(name)
            continue
        pieces = name.replace("[", "|", 1).replace("]", "|", 1).split("|")
        if len(pieces) != 3:
            raise InventoryError(f"{path}: host pattern '{pattern}': unbalanced [ ] or a '|' in the name; fix the pattern")
        head, bounds, tail = pieces
        values, width = _range_values(path, pattern, bounds)
        if len(values) * (len(done) + len(todo) + 1) > MAX_HOSTS:
            raise InventoryError(f"{path}: host pattern '{pattern}' expands to over {MAX_HOSTS} hosts; narrow the range")
        todo.extend(reversed([f"{head}{str(v).zfill(width)}{tail}" for v in values]))
    return done


def parse_host_pattern(path: str, pattern) -> tuple:
    """A hosts: key -> ([host names], port or None), as Ansible's YAML inventory reads it."""
    if not isinstance(pattern, str):
        raise InventoryError(f"{path}: host name {pattern!r} is not a string; quote it")
    if not pattern:
        raise InventoryError(f"{path}: a host has an empty name; name it")
    host, port = _split_port(pattern)
    return _expand_pattern(path, host), port
