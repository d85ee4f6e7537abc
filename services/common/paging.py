"""Offset paging of the list RPCs (`page_size`, `page_token`, `next_page_token`), one rule for every
service: 0..1000 items a page, 0 for 100; the token is the offset a previous answer gave."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.common.checks import parse_number
from services.common.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    offset: int
    size: int

    def cut(self, items: Sequence[T]) -> tuple[list[T], str]:
        """This page of `items` and the token of the next ('' when there is none)."""
        end = self.offset + self.size
        return list(items[self.offset:end]), str(end) if end < len(items) else ""


def page_request(page_size: int, page_token: str, response: str) -> PageRequest:
    """Checks a request's paging fields before anything is asked; `response` names the message whose
    next_page_token a page_token must be."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"is {page_size}; it lies in 0..{MAX_PAGE_SIZE} (0 means "
                                           f"{DEFAULT_PAGE_SIZE})")
    offset = parse_number("page_token", page_token, f"a token a {response} gave") if page_token else 0
    return PageRequest(offset, page_size or DEFAULT_PAGE_SIZE)
