"""Invoke entry point: `inv --list`. The collection lives in the fabfile package (so `fab` sees it too)."""

from fabfile import ns  # noqa: F401
