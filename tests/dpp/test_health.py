import pytest
from django.test import Client

from dpp.db.redis import get_redis


def test_health_touches_nothing() -> None:
    # No django_db mark: any database access here raises, so this also proves /health makes no query.
    response = Client().get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_all_up() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "services": {"database": "up", "redis": "up", "broker": "up", "storage": "up"},
    }


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_down(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    assert get_redis() is not None
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["services"]["redis"] == "down"
    assert body["services"]["database"] == "up"
    assert response["Retry-After"] == "5"


@pytest.mark.django_db
def test_readyz_reports_redis_disabled_in_embedded_mode(settings) -> None:
    settings.REDIS_URL = ""
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["services"]["redis"] == "disabled"
    assert "rate limiting is off" in response.json()["warnings"][0]


@pytest.mark.django_db
def test_metrics_count_requests_by_route_and_status() -> None:
    client = Client()
    client.get("/health")
    client.get("/no/such/path")
    text = client.get("/metrics").content.decode()
    assert 'dpp_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'dpp_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert "dpp_http_request_duration_seconds_bucket" in text
