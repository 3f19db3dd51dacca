"""An object id no row can have (a NUL, which PostgreSQL text cannot hold; longer than the key's column; not a
number or a UUID) is the admin's "does not exist" answer on every page of every registered admin, never a 500."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import NoReverseMatch, reverse

from tests.helpers.admin import staff_client

pytestmark = pytest.mark.django_db

# As typed in a URL: a percent-encoded NUL, the admin's own quoting of one, too long for any key column, junk.
BAD_IDS = ["%00", "_00", "ab%00cd", "x" * 300, "%00" * 3, "-1", "99999999999999999999", "not-a-key"]
PAGES = ["change", "history", "delete", "topup", "adjust", "result"]


def _page_urls() -> list[tuple[str, str]]:
    urls = []
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        for page in PAGES:
            try:
                url = reverse(f"admin:{info[0]}_{info[1]}_{page}", args=["ID"])
            except NoReverseMatch:
                continue
            urls.append((f"{info[0]}.{info[1]}:{page}", url))
    return urls


@pytest.fixture
def root() -> Client:
    return staff_client("root", superuser=True)


def test_every_registered_admin_is_covered() -> None:
    labels = {label.split(":")[0] for label, _ in _page_urls()}
    assert {"dpp.tenant", "dpp.apikey", "billing.plan", "billing.account", "runs.run", "auth.user"} <= labels
    assert {"dpp.tenant:topup", "dpp.tenant:adjust", "runs.run:result"} <= {label for label, _ in _page_urls()}


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_an_id_no_row_can_have_is_does_not_exist(root: Client, bad_id: str) -> None:
    answers = {}
    for label, url in _page_urls():
        response = root.get(url.replace("/ID/", f"/{bad_id}/"))
        answers[label] = response.status_code
        if response.status_code == 302:
            assert response["Location"].startswith("/admin/"), label
    # 302: the admin's "does not exist" redirect (a message names the id); 403: a page the model never allows
    # (deleting a read-only row); 404: no such page.
    assert set(answers.values()) <= {302, 403, 404}, answers


def test_the_view_on_site_shortcut_too(root: Client) -> None:
    from django.contrib.contenttypes.models import ContentType

    from dpp.models import Tenant

    content_type = ContentType.objects.get_for_model(Tenant)
    response = root.get(f"/admin/r/{content_type.pk}/%00/")
    assert response.status_code == 404
