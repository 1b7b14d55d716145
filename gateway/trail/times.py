"""Ledger times — microseconds since the epoch, UTC (audit/FORMAT.md §1) — as people in
China read them, and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.catalog.service import CHINA

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def china(microseconds: int) -> datetime:
    """The exact moment, in China time."""
    return (EPOCH + timedelta(microseconds=microseconds)).astimezone(CHINA)


def china_iso(microseconds: int) -> str:
    return china(microseconds).isoformat()


def china_time(microseconds: int, *, seconds: bool = True) -> str:
    """``2026-11-03 00:30:05`` (or to the minute), as pages show it."""
    return china(microseconds).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def china_day(microseconds: int) -> str:
    return china(microseconds).date().isoformat()


def micros(moment: datetime) -> int:
    """``moment`` (aware) as a ledger time."""
    return (moment - EPOCH) // timedelta(microseconds=1)
