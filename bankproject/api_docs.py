"""The OpenAPI document and Swagger UI: served where ``API_DOCS`` says (default: only when
debugging), and never a 500 for a strange ``?version=``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response


def _served() -> None:
    if not settings.API_DOCS:
        raise Http404


class SchemaView(SpectacularAPIView):
    http_method_names = ["get", "head"]  # DRF's OPTIONS would describe the view even with the docs off

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        _served()
        version = request.query_params.get("version")
        if version is not None and version != settings.SPECTACULAR_SETTINGS["VERSION"]:
            # It went into a Content-Disposition header as it came (a NUL made that a 500).
            known = settings.SPECTACULAR_SETTINGS["VERSION"]
            return Response({"version": [f"Unknown API version; this server has {known}."]}, status=400)
        return super().get(request, *args, **kwargs)


class SwaggerView(SpectacularSwaggerSplitView):
    http_method_names = ["get", "head"]  # its OPTIONS rendered a template that does not exist: a 500

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        _served()
        return super().get(request, *args, **kwargs)
