"""Model updates: signed weight diffs and the device's versioned model store (no torch)."""

from edgeasr.update.diff import DiffError, make_diff, read_diff
from edgeasr.update.store import ModelStore

__all__ = ["DiffError", "ModelStore", "make_diff", "read_diff"]
