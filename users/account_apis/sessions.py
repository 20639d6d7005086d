"""The user's sessions and security events: ``GET /api/sessions/``, ``DELETE /api/sessions/``,
``DELETE /api/sessions/<id>/``, ``GET /api/users/me/security-events/``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from users.account_apis.common import ENROLLMENT_FORBIDDEN, UNAUTHORISED, AuthenticatedApi
from users.apis import ERROR, FIELD_ERRORS
from users.models import LoginSession, SecurityEvent, User
from users.services import sessions
from users.throttles import SessionEndThrottle


class SessionOutputSerializer(serializers.ModelSerializer):
    current = serializers.SerializerMethodField()

    class Meta:
        model = LoginSession
        fields = ["id", "kind", "user_agent", "client_ip", "created_at", "last_used_at", "expires_at", "current"]

    def get_current(self, session: LoginSession) -> bool:
        return session.pk == self.context.get("current_id")


class SessionsEndedSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="How many of your other sessions ended.")


class SessionListApi(AuthenticatedApi):
    """``GET /api/sessions/``: the user's live sessions, API and browser log-ins alike;
    ``DELETE``: end them all but the one asking."""

    throttle_classes = [SessionEndThrottle]

    @extend_schema(
        operation_id="sessions",
        summary="Your live sessions (API and browser log-ins)",
        responses={200: SessionOutputSerializer(many=True), 401: UNAUTHORISED, 403: ENROLLMENT_FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        user = cast("User", request.user)
        live = LoginSession.objects.filter(user=user).live().order_by("-created_at")
        current = getattr(getattr(request.user, "login_session", None), "pk", None)
        return Response(SessionOutputSerializer(live, many=True, context={"current_id": current}).data)

    @extend_schema(
        operation_id="sessions_end_others",
        summary="End every session but this one (API and browser log-ins; a browser at its next request)",
        description="Every live session of yours but the one making the request ends: their tokens stop "
        "working at once, a browser is logged out at its next request. `revoked` says how many; one "
        "`session_revoked` event when any ended. No password needed: ending sessions only protects.",
        responses={200: SessionsEndedSerializer, 401: UNAUTHORISED, 403: ENROLLMENT_FORBIDDEN},
    )
    def delete(self, request: Request) -> Response:
        ended = sessions.sessions_end_others(user=cast("User", request.user))
        return Response({"revoked": ended})


class SessionRevokeApi(AuthenticatedApi):
    """``DELETE /api/sessions/<id>/``: end one of the user's sessions."""

    throttle_classes = [SessionEndThrottle]

    @extend_schema(
        operation_id="session_revoke",
        summary="End one of your sessions (a browser is logged out at its next request)",
        responses={
            204: None,
            401: UNAUTHORISED,
            403: ENROLLMENT_FORBIDDEN,
            404: OpenApiResponse(ERROR, description="Not one of yours."),
        },
    )
    def delete(self, request: Request, session_id: str) -> Response:
        try:
            key = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("No such session.") from None
        if not sessions.session_revoke(user=cast("User", request.user), session_id=key):
            raise NotFound("No such session.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecurityEventOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = SecurityEvent
        fields = ["kind", "at", "client_ip", "user_agent", "actor", "detail"]


def _is_time(position: str) -> bool:
    """A time PostgreSQL can compare with: Python reads offsets up to ±23:59 and with fractions of a
    second, PostgreSQL refuses past ±15:59 and the fractions (crafted cursors were 500s: reviews).
    Only whole minutes pass: the server writes cursors with none finer."""
    try:
        when = parse_datetime(position)
    except ValueError:
        return False
    if when is None:
        return False
    offset = when.utcoffset()
    return offset is None or (abs(offset) < timedelta(hours=16) and offset % timedelta(minutes=1) == timedelta(0))


class NewestFirst(CursorPagination):
    """Pages of a growing list that never skip or repeat a row: a JSON list, and the next and
    previous pages in a ``Link`` header (RFC 8288)."""

    ordering = ("-at", "-id")
    page_size = 50

    def decode_cursor(self, request: Request) -> Any:
        invalid = ValidationError({"cursor": ["Not a cursor of this list: follow the Link header."]})
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        if cursor is not None and cursor.position is not None and not _is_time(str(cursor.position)):
            raise invalid
        return cursor

    def get_paginated_response(self, data: Any) -> Response:
        links = [
            f'<{url}>; rel="{rel}"'
            for rel, url in (("next", self.get_next_link()), ("prev", self.get_previous_link()))
            if url
        ]
        return Response(data, headers={"Link": ", ".join(links)} if links else None)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return schema


class SecurityEventListApi(AuthenticatedApi):
    """``GET /api/users/me/security-events/``: who did what to the account, when, from where."""

    pagination_class = NewestFirst

    @extend_schema(
        operation_id="security_events",
        summary="Your account's security events, newest first",
        description='50 a page; the next page\'s URL is in the `Link` header (`rel="next"`).',
        parameters=[OpenApiParameter("cursor", str, description="From the `Link` header.")],
        responses={
            200: SecurityEventOutputSerializer(many=True),
            400: OpenApiResponse(
                FIELD_ERRORS.response, description="A `cursor` that is not one of this list's; an unknown parameter."
            ),
            401: UNAUTHORISED,
            403: ENROLLMENT_FORBIDDEN,
        },
    )
    def get(self, request: Request) -> Response:
        if unknown := sorted(set(request.query_params) - {"cursor"}):
            raise ValidationError({name: ["Unknown parameter."] for name in unknown})
        paginator = self.pagination_class()
        rows = SecurityEvent.objects.filter(user=cast("User", request.user))
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(SecurityEventOutputSerializer(page, many=True).data)
