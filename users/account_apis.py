"""JSON API of the account after sign-up: tokens, sessions, profile, password reset.

One view per operation with its own input and output serializers; each calls one service. Every
error body is JSON with ``detail`` (and ``code`` where named); throttled answers are 429 with
Retry-After.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import authenticate, password_validation, user_logged_in
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import MethodNotAllowed, NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users import identity
from users.apis import DETAIL, FIELD_ERRORS, THROTTLED, StrictInputSerializer, _field
from users.auth import SessionJWTAuthentication, client_ip, lockout_response
from users.errors import InvalidToken, WrongPassword
from users.models import LoginSession, User
from users.services import accounts, sessions
from users.throttles import (
    AccountThrottle,
    LoginThrottle,
    LoginUsernameThrottle,
    PasswordResetAddressThrottle,
    PasswordResetThrottle,
    RefreshThrottle,
)

BAD_CREDENTIALS = "No account matches that username or address and password."
NOT_VERIFIED = "Verify your email address first: use the link we sent you, or ask for a new one."
BAD_REFRESH = "This refresh token is invalid, expired or spent; log in again."
BAD_RESET_LINK = "This password reset link is invalid or has expired."
RESET_ACCEPTED = "If that address has an account, an email with a link to choose a new password is on its way."

UNAUTHORISED = OpenApiResponse(
    response=inline_serializer(
        "AuthError", {"detail": serializers.CharField(), "code": serializers.CharField(required=False)}
    ),
    description="No valid access token, or its session ended (logged out, revoked, blocked, expired).",
)


def _detail(message: str, code: str, http_status: int) -> Response:
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


class _AuthenticatedApi(APIView):
    authentication_classes = [SessionJWTAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [AccountThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A method the view doesn't have is a 405 before it is a 401.
        method = request.method or ""
        if not hasattr(self, method.lower()):
            raise MethodNotAllowed(method)
        super().initial(request, *args, **kwargs)


def _token_fields() -> dict[str, serializers.Field]:
    """The token pair in an answer (for the OpenAPI document)."""
    return {
        "access": serializers.CharField(),
        "refresh": serializers.CharField(),
        "access_expires_at": serializers.DateTimeField(),
        "refresh_expires_at": serializers.DateTimeField(),
    }


def _tokens_body(tokens: sessions.Tokens) -> dict[str, Any]:
    return {
        "access": tokens.access,
        "refresh": tokens.refresh,
        "access_expires_at": tokens.access_expires_at,
        "refresh_expires_at": tokens.refresh_expires_at,
    }


class TokenObtainApi(APIView):
    """``POST /api/tokens/``: log in with a username (or the account's address) and password."""

    throttle_classes = [LoginThrottle, LoginUsernameThrottle]

    @extend_schema_serializer(component_name="Login")
    class InputSerializer(StrictInputSerializer):
        username = serializers.CharField(max_length=254, help_text="The username or the account's email address.")
        password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, trim_whitespace=False)

    @extend_schema(
        operation_id="token_obtain",
        summary="Log in: an access and a refresh token",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "Tokens",
                _token_fields() | {"session_id": serializers.UUIDField(), "user": UserOutputSerializer()},
            ),
            400: FIELD_ERRORS,
            401: OpenApiResponse(DETAIL, description="One answer for an unknown account and a wrong password."),
            403: OpenApiResponse(DETAIL, description="`code` `email_not_verified`: the password is right."),
            429: THROTTLED,
        },
        examples=[
            OpenApiExample(
                "log in", request_only=True, value={"username": "ada", "password": "correct horse battery staple"}
            )
        ],
    )
    def post(self, request: Request) -> Response | HttpResponse:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if getattr(request._request, "axes_locked_out", False):  # django-axes refused to even try
            return lockout_response(request._request)
        if user is None:
            return _detail(BAD_CREDENTIALS, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
        if settings.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL and not user.is_email_verified:
            return _detail(NOT_VERIFIED, "email_not_verified", status.HTTP_403_FORBIDDEN)
        tokens = sessions.session_start(
            user=user, user_agent=request.headers.get("User-Agent", ""), client_ip=client_ip(request)
        )
        # As django.contrib.auth.login() does: last_login is updated, and django-axes resets the
        # failures of this account and client (and records the access).
        user_logged_in.send(sender=user.__class__, request=request._request, user=user)
        body = _tokens_body(tokens) | {"session_id": tokens.session.pk, "user": UserOutputSerializer(user).data}
        return Response(body)


class TokenRefreshApi(APIView):
    """``POST /api/tokens/refresh/``: a new pair for the current refresh token (which is spent)."""

    throttle_classes = [RefreshThrottle]

    @extend_schema_serializer(component_name="TokenRefresh")
    class InputSerializer(StrictInputSerializer):
        refresh = serializers.CharField(max_length=2048)

    @extend_schema(
        operation_id="token_refresh",
        summary="Renew the tokens (refresh tokens rotate)",
        request=InputSerializer,
        responses={
            200: inline_serializer("RefreshedTokens", _token_fields()),
            400: FIELD_ERRORS,
            401: OpenApiResponse(
                DETAIL,
                description="Expired, revoked or blocked session, or a refresh token used before — which also "
                "revokes its session.",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tokens = sessions.session_refresh(refresh=serializer.validated_data["refresh"])
        except InvalidToken:
            return _detail(BAD_REFRESH, "token_not_valid", status.HTTP_401_UNAUTHORIZED)
        return Response(_tokens_body(tokens))


class LogoutApi(APIView):
    """``POST /api/tokens/logout/``: end the session of a refresh token."""

    throttle_classes = [RefreshThrottle]

    @extend_schema_serializer(component_name="Logout")
    class InputSerializer(StrictInputSerializer):
        refresh = serializers.CharField(max_length=2048)

    @extend_schema(
        operation_id="logout",
        summary="Log out (the session's tokens stop working)",
        request=InputSerializer,
        responses={
            204: None,
            400: FIELD_ERRORS,
            401: OpenApiResponse(DETAIL, description="Unknown token."),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            sessions.session_logout(refresh=serializer.validated_data["refresh"])
        except InvalidToken:
            return _detail(BAD_REFRESH, "token_not_valid", status.HTTP_401_UNAUTHORIZED)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProfileInputSerializer(StrictInputSerializer):
    full_name = serializers.CharField(max_length=255, required=False)
    email = serializers.EmailField(max_length=254, required=False)
    password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, required=False, trim_whitespace=False)
    current_password = serializers.CharField(
        max_length=settings.PASSWORD_MAX_LENGTH, required=False, trim_whitespace=False
    )

    validate_full_name = staticmethod(_field(identity.normalize_full_name))
    validate_email = staticmethod(_field(identity.normalize_email))


def _profile_update(request: Request, user: User, *, by_staff: bool) -> Response:
    serializer = ProfileInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    if "password" in data:
        if not by_staff and not data.get("current_password"):
            raise ValidationError({"current_password": ["Give your current password to change it."]})
        try:
            password_validation.validate_password(data["password"], user=user)
        except DjangoValidationError as exc:
            raise ValidationError({"password": list(exc.messages)}) from exc
    try:
        user = accounts.profile_update(
            user=user,
            full_name=data.get("full_name"),
            email=data.get("email"),
            password=data.get("password"),
            current_password=data.get("current_password"),
            by_staff=by_staff,
            current_session=getattr(request.user, "login_session", None),
        )
    except WrongPassword:
        raise ValidationError({"current_password": ["That is not your current password."]}) from None
    return Response(UserOutputSerializer(user).data)


class MeApi(_AuthenticatedApi):
    """``GET, PATCH /api/users/me/``: the user's own profile."""

    @extend_schema(operation_id="me", summary="Your profile", responses={200: UserOutputSerializer, 401: UNAUTHORISED})
    def get(self, request: Request) -> Response:
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(
        operation_id="me_update",
        summary="Change your name, address or password",
        description=(
            "A new `email` is not applied: it becomes `pending_email`, a link goes to it and a notice to the "
            "current address; it replaces `email` once the link is used. A taken address is answered the same "
            "(its owner is told instead). A `password` needs `current_password` and ends every other session."
        ),
        request=ProfileInputSerializer,
        responses={200: UserOutputSerializer, 400: FIELD_ERRORS, 401: UNAUTHORISED, 429: THROTTLED},
    )
    def patch(self, request: Request) -> Response:
        return _profile_update(request, request.user, by_staff=False)  # type: ignore[arg-type]


class UserUpdateApi(_AuthenticatedApi):
    """``PATCH /api/users/<username>/``: a banker changes a customer's profile."""

    @extend_schema(
        operation_id="user_update",
        summary="A banker changes someone's name, address or password",
        description="Bankers only (`role` `banker`); no `current_password` is needed. A new password ends every "
        "session of that user.",
        request=ProfileInputSerializer,
        responses={
            200: UserOutputSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            403: OpenApiResponse(DETAIL, description="Not a banker (depositors use /api/users/me/)."),
            404: OpenApiResponse(DETAIL, description="No such user."),
            429: THROTTLED,
        },
    )
    def patch(self, request: Request, username: str) -> Response:
        if request.user.role != User.Role.BANKER:  # type: ignore[union-attr]
            raise PermissionDenied("Only bankers may change other people's profiles.")
        user = User.objects.filter(username_canonical=identity.canonical_username(username)).first()
        if user is None:
            raise NotFound("No such user.")
        return _profile_update(request, user, by_staff=True)


class SessionOutputSerializer(serializers.ModelSerializer):
    current = serializers.SerializerMethodField()

    class Meta:
        model = LoginSession
        fields = ["id", "user_agent", "client_ip", "created_at", "expires_at", "last_used_at", "current"]

    def get_current(self, session: LoginSession) -> bool:
        return session.pk == self.context.get("current_id")


class SessionListApi(_AuthenticatedApi):
    """``GET /api/sessions/``: the user's live sessions."""

    @extend_schema(
        operation_id="sessions",
        summary="Your live sessions",
        responses={200: SessionOutputSerializer(many=True), 401: UNAUTHORISED},
    )
    def get(self, request: Request) -> Response:
        user = cast("User", request.user)
        live = LoginSession.objects.filter(user=user).live().order_by("-created_at")
        current = getattr(getattr(request.user, "login_session", None), "pk", None)
        return Response(SessionOutputSerializer(live, many=True, context={"current_id": current}).data)


class SessionRevokeApi(_AuthenticatedApi):
    """``DELETE /api/sessions/<id>/``: end one of the user's sessions."""

    @extend_schema(
        operation_id="session_revoke",
        summary="End one of your sessions",
        responses={204: None, 401: UNAUTHORISED, 404: OpenApiResponse(DETAIL, description="Not one of yours.")},
    )
    def delete(self, request: Request, session_id: str) -> Response:
        try:
            key = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("No such session.") from None
        if not sessions.session_revoke(user=cast("User", request.user), session_id=key):
            raise NotFound("No such session.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordResetApi(APIView):
    """``POST /api/password-reset/``: always 202."""

    throttle_classes = [PasswordResetThrottle, PasswordResetAddressThrottle]

    @extend_schema_serializer(component_name="PasswordReset")
    class InputSerializer(StrictInputSerializer):
        email = serializers.EmailField(max_length=254)

        validate_email = staticmethod(_field(identity.normalize_email))

    @extend_schema(
        operation_id="password_reset",
        summary="Email a link to choose a new password",
        description="Always 202, for unknown, unverified and verified addresses alike; a known address gets "
        "one email per cooldown.",
        request=InputSerializer,
        responses={202: DETAIL, 400: FIELD_ERRORS, 429: THROTTLED},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        accounts.password_reset_request(email=serializer.validated_data["email"])
        return Response({"detail": RESET_ACCEPTED}, status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmApi(APIView):
    """``POST /api/password-reset/confirm/``: set the new password through the emailed link."""

    throttle_classes = [PasswordResetThrottle]

    @extend_schema_serializer(component_name="PasswordResetConfirm")
    class InputSerializer(StrictInputSerializer):
        uid = serializers.CharField(max_length=64)
        token = serializers.CharField(max_length=128)
        new_password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, trim_whitespace=False)

    @extend_schema(
        operation_id="password_reset_confirm",
        summary="Choose a new password (every session ends)",
        request=InputSerializer,
        responses={
            204: None,
            400: OpenApiResponse(
                FIELD_ERRORS.response,
                description="One identical `detail` for a wrong, used or expired link; field errors for a weak "
                "password.",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            accounts.password_reset_confirm(uid=data["uid"], token=data["token"], new_password=data["new_password"])
        except InvalidToken:
            return _detail(BAD_RESET_LINK, "invalid_link", status.HTTP_400_BAD_REQUEST)
        except DjangoValidationError as exc:
            raise ValidationError({"new_password": list(exc.messages)}) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
