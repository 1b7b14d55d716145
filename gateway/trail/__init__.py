"""The audit trail: a searchable index derived from the ledger (:mod:`gateway.trail.index`),
the history of an object (:mod:`gateway.trail.history`) and what is built on them."""

from gateway.trail.index import (
    Observer,
    TrailEntry,
    TrailIndex,
    TrailPage,
    TrailQuery,
    TrailQueryError,
)

__all__ = ["Observer", "TrailEntry", "TrailIndex", "TrailPage", "TrailQuery", "TrailQueryError"]
