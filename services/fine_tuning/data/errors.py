"""Why a dataset cannot be made: errors whose message is the reason a person reads in a failed dataset."""

from __future__ import annotations


class DatasetError(ValueError):
    """The batch or its items cannot make a dataset; the message says why."""


class NoUsableSessions(DatasetError):
    """Nothing to learn from: no sessions, or none with a click."""


class MissingItems(DatasetError):
    """Items the sessions showed that the item source does not have."""

    def __init__(self, missing: list[str], source: str) -> None:
        self.missing = sorted(missing)
        shown = ", ".join(repr(i) for i in self.missing[:20])
        more = f" and {len(self.missing) - 20} more" if len(self.missing) > 20 else ""
        super().__init__(f"{len(self.missing)} items missing from {source}: {shown}{more}")


class UnreadableItems(DatasetError):
    """Items that exist but cannot be read or decoded."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = dict(sorted(reasons.items()))
        listed = "; ".join(f"{item_id!r}: {why}" for item_id, why in list(self.reasons.items())[:10])
        more = f"; and {len(self.reasons) - 10} more" if len(self.reasons) > 10 else ""
        super().__init__(f"{len(self.reasons)} items unreadable: {listed}{more}")


class DatasetNotFound(LookupError):
    """No stored dataset under a key (it was never prepared, or its preparation failed)."""


class ArtifactStoreError(RuntimeError):
    """The dataset store could not be written or read (the disk or S3 failed); worth retrying."""


class ItemSourceUnavailable(ArtifactStoreError):
    """The item source (S3) could not be reached or asked for now; worth retrying, like the store."""
