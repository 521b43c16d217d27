"""Rolling deploy and rollback of a binary service: the artifact, the commands as data, the rollout."""
