"""The persistent tier: results kept on disk, keyed by UID, source row and function."""
