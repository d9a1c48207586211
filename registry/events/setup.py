"""The event recorder and deliverer a server runs, from `notifications` in the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.config import NotificationsConfig
from registry.events.audit import AuditLog
from registry.events.record import EventRecorder
from storage.outbox import Outbox
from storage.store import Store

if TYPE_CHECKING:
    from registry.events.deliver import Deliverer


def build_events(
    config: NotificationsConfig, store: Store
) -> tuple[EventRecorder, Deliverer | None]:
    outbox = None
    if config.endpoints:
        before_answer = config.outbox_sync == "before_answer"
        outbox = Outbox(store.driver, config.outbox_max_batches, before_answer)
    audit = AuditLog(config.audit.path) if config.audit.enabled else None
    deliverer = None
    if outbox is not None:
        # Imported only here: a server with no endpoint never loads httpx (a few MB a
        # worker).
        from registry.events.deliver import Deliverer

        deliverer = Deliverer(outbox, config)
    return EventRecorder(outbox, audit, config.endpoints), deliverer
