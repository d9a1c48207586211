"""Events of registry actions: built per request (`record`), kept in the storage's outbox,
delivered to webhooks (`deliver`) and written to the audit log (`audit`)."""
