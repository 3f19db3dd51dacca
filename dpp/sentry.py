"""Optional error reporting to Sentry: on only when SENTRY_DSN is set (off by default, and in the embedded mode).

No personal data is sent (`send_default_pii=False`: no user, cookies, client address or request body of a signed-in
user); the Django and Celery integrations report unhandled errors of requests and tasks with their trace ids.
"""

from __future__ import annotations


def sentry_init(*, dsn: str, environment: str) -> bool:
    """Start the Sentry client when a DSN is given; False, and nothing imported, when not."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )
    return True
