"""Webhooks, Standard Webhooks 1.0 (SPEC §10): endpoints, events and deliveries.

- ``outbox``: an event and one delivery per subscribed endpoint, written in the caller's transaction; the sending
  is published only once that transaction commits (an event of a rolled-back change never exists).
- ``sending``: one attempt of one delivery, claimed by a CAS on its attempt count, signed, POSTed through the
  SSRF-safe outbound client (the URL checked again), its outcome recorded by a CAS; retries on the §10 schedule.
- ``endpoints``: registration (the URL checked, every address), changes, secrets and their rotation, redelivery.
Webhook code never touches money: the data it sends is built by its callers.
"""
