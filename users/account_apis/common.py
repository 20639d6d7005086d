"""What every account API shares: the user's output, the authenticated base view, error bodies."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users.auth import SessionJWTAuthentication
from users.models import User
from users.throttles import AccountThrottle

UNAUTHORISED = OpenApiResponse(
    response=inline_serializer(
        "AuthError", {"detail": serializers.CharField(), "code": serializers.CharField(required=False)}
    ),
    description="No valid access token, or its session ended (logged out, revoked, blocked, expired).",
)


def detail_response(message: str, code: str, http_status: int) -> Response:
    return Response({"detail": message, "code": code}, status=http_status)


class UserOutputSerializer(serializers.ModelSerializer):
    pending_email = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = [
            "username",
            "full_name",
            "email",
            "is_email_verified",
            "created_at",
            "role",
            "pending_email",
            "password_changed_at",
        ]

    def get_pending_email(self, user: User) -> str | None:
        return user.pending_email or None


class AuthenticatedApi(APIView):
    authentication_classes = [SessionJWTAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [AccountThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A method the view doesn't have is a 405 before it is a 401.
        method = request.method or ""
        if not hasattr(self, method.lower()):
            raise MethodNotAllowed(method)
        super().initial(request, *args, **kwargs)
