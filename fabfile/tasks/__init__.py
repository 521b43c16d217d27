"""Invoke collections, one per role: `inv common.setup`, `inv haproxy.setup`, `inv api.deploy`, ..."""
