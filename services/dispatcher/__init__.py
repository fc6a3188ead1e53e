"""The webhook dispatcher: sends the deliveries the platform records, signed, retried
with backoff for a day, under the URL policy (docs/webhooks.md)."""
