"""The project's URLs plus two views that exist only to test error handling."""

from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import urlpatterns as project_urlpatterns


class EchoApi(APIView):
    def post(self, request: Request) -> Response:
        return Response({"echo": request.data})


class BoomApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 'secret-sauce' AS password_hash FROM nonexistent_table_xyz")
        return Response({})


def boom_plain(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("DJANGO_SECRET_KEY=hunter2 leaked in a traceback")


urlpatterns = [
    path("test/echo", EchoApi.as_view()),
    path("test/boom", BoomApi.as_view()),
    path("test/boom-plain", boom_plain),
    *project_urlpatterns,
]
