"""Stable names and fields of the library's log records (documented in the README).

Every record about one of these events carries ``record.event`` (a name below) and
``record.node`` (the node URL, or None when the event is not about one node), plus the fields
named per event; log pipelines can key on them instead of parsing messages, which may change.
Pass ``extra=fields(...)`` to a ``logging`` call.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["EVENTS", "fields"]

#: event name -> what happened (the README table is generated from the same words)
EVENTS: Final = {
    "node_failed": "an attempt to the node failed before a final HTTP answer; reported to "
                   "the host-wide node health (DEBUG; fields: error)",
    "node_down": "the node is DOWN after consecutive failures: no traffic until probes "
                 "succeed (fields: failures)",
    "node_recovered": "the node is ACTIVE again, or back to QUARANTINED from DOWN "
                      "(fields: observation)",
    "leader_elected": "this process became the refresh leader, or took over a wedged one "
                      "(fields: segment, epoch, takeover)",
    "leader_resigned": "this process stopped leading (fields: segment, reason)",
    "table_published": "the leader published a changed node table (fields: segment, nodes, "
                       "epoch)",
    "refresh_failed": "a /localnodes refresh failed; the last table is kept (fields: segment, "
                      "failures, error)",
    "discovery_fallback": "the configured rack/datacenter had no node: a wider scope is used "
                          "(or, with fallback=False, calls raise NoLiveNodesError) "
                          "(fields: scope)",
    "discovery_failed": "no scope yielded a node (fields: error)",
    "seeds_fallback": "no table published yet; attempts go to the seed nodes",
}


def fields(event: str, node: str | None = None, **more: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``{"event": event, "node": node, **more}``."""
    assert event in EVENTS, event
    return {"event": event, "node": node, **more}
