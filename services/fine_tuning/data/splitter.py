"""Leak-free, seeded train/test split of parsed sessions.

Sessions are grouped by query (`QueryItem.group_key`), and a group goes whole to one side, so no query
sits on both; the reference split sessions independently and unseeded (REFERENCE.md, item 7)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from services.fine_tuning.data.errors import NoUsableSessions
from services.fine_tuning.data.parser import ClickstreamSession


class ClickstreamSessionsSplitter:
    """Splits sessions into (train, test) by whole query groups.

    Args:
        test_size_ratio: share of sessions to put on the test side, in (0, 1); whole groups are taken
            until the share is reached, and each side keeps at least one group.
        shuffle: shuffle the groups with `random_state` before taking test groups; without it (and
            without `time_ordered`) the groups seen last go to test.
        random_state: seed of the shuffle, so a rerun gives the same split.
        time_ordered: the groups whose newest session is newest go to test (a forward-in-time split,
            as in production); `shuffle` only breaks ties then.
    """

    def __init__(self, test_size_ratio: float = 0.2, shuffle: bool = True, random_state: int | None = 42,
                 time_ordered: bool = False) -> None:
        if not 0 < test_size_ratio < 1:
            raise ValueError(f"test_size_ratio must be in (0, 1), got {test_size_ratio!r}")
        if shuffle and random_state is None:
            raise ValueError("random_state must be an int when shuffle=True (the split must be reproducible)")
        self.test_size_ratio = test_size_ratio
        self.shuffle = shuffle
        self.random_state = random_state
        self.time_ordered = time_ordered

    def split(self, sessions: Sequence[ClickstreamSession]
              ) -> tuple[list[ClickstreamSession], list[ClickstreamSession]]:
        groups: dict[str, list[ClickstreamSession]] = {}
        for session in sessions:
            groups.setdefault(session.query.group_key(), []).append(session)
        if len(groups) < 2:
            raise NoUsableSessions(f"a leak-free split needs sessions of at least 2 distinct queries; "
                                   f"got {len(sessions)} sessions of {len(groups)} query")
        keys = list(groups)
        if self.shuffle:
            random.Random(self.random_state).shuffle(keys)
        if self.time_ordered:
            # Stable sort: among groups of one time, the (shuffled) order above decides.
            keys.sort(key=lambda k: max(s.created_at for s in groups[k]))
        wanted = self.test_size_ratio * len(sessions)
        test_keys: list[str] = []
        taken = 0
        for key in reversed(keys[1:]):  # the first group always stays in train
            if taken >= wanted:
                break
            test_keys.append(key)
            taken += len(groups[key])
        test_set = set(test_keys)
        train = [s for s in sessions if s.query.group_key() not in test_set]
        test = [s for s in sessions if s.query.group_key() in test_set]
        return train, test
