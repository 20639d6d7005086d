"""Log-in, refresh and log-out: ``/api/tokens/``, ``/api/tokens/mfa/``, ``/api/tokens/passkey/begin/``,
``/api/tokens/passkey/``, ``/api/tokens/refresh/``, ``/api/tokens/logout/``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, user_logged_in
from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users import identity, reauth
from users.account_apis.common import UserOutputSerializer, credential_field, detail_response
from users.apis import ERROR, FIELD_ERRORS, THROTTLED, StrictInputSerializer
from users.auth import client_ip, lockout_response, proof_turn
from users.errors import InvalidToken, LockedOut, WrongProof
from users.mfa import flows as mfa
from users.mfa import passkeys
from users.models import User
from users.services import sessions
from users.throttles import LoginThrottle, PasskeyOptionsThrottle, RefreshThrottle, record_login_failure

BAD_CREDENTIALS = "No account matches that username or address and password."
NOT_VERIFIED = "Verify your email address first: use the link we sent you, or ask for a new one."
MFA_REQUIRED = (
    "The password is right; now give a code from your authenticator app, or your passkey's answer "
    "(POST /api/tokens/mfa/)."
)
BAD_SECOND_FACTOR = "That code is wrong or was used already, or the log-in took too long: log in again."
BAD_PASSKEY = "That passkey is not known here, or its answer is wrong, was used already or took too long."
BAD_REFRESH = "This refresh token is invalid, expired or spent; log in again."


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

    throttle_classes = [LoginThrottle]  # failed log-ins per client address

    @extend_schema_serializer(component_name="Login")
    class InputSerializer(StrictInputSerializer):
        username = serializers.CharField(
            max_length=254,
            validators=[identity.login_length_check],
            help_text="The username or the account's email address.",
        )
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
            401: OpenApiResponse(
                inline_serializer(
                    "LoginRefused",
                    {
                        "detail": serializers.CharField(),
                        "code": serializers.CharField(),
                        "mfa_token": serializers.CharField(required=False),
                        "methods": serializers.ListField(child=serializers.CharField(), required=False),
                        "passkey_options": serializers.DictField(required=False),
                    },
                ),
                description="One answer for an unknown account and a wrong password. For an account with a "
                "second factor and the right password: `code` `mfa_required`, `mfa_token` (single use, 5 minutes) "
                "and `methods`; `passkey_options` (`PublicKeyCredentialRequestOptionsJSON`) when the account has a "
                "passkey; "
                "go on with `POST /api/tokens/mfa/`.",
            ),
            403: OpenApiResponse(ERROR, description="`code` `email_not_verified`: the password is right."),
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
        try:
            with proof_turn(request._request, data["username"]):
                user = authenticate(request._request, username=data["username"], password=data["password"])
        except LockedOut:
            return lockout_response(request._request)
        if getattr(request._request, "axes_locked_out", False):  # django-axes refused to even try
            return lockout_response(request._request)
        if user is None:
            return detail_response(BAD_CREDENTIALS, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
        if settings.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL and not user.is_email_verified:
            return detail_response(NOT_VERIFIED, "email_not_verified", status.HTTP_403_FORBIDDEN)
        if user.pk is None:  # a sign-up's stand-in (users.auth): no account to log in to
            return detail_response(BAD_CREDENTIALS, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
        if mfa.has_factor(user=user):  # no session, no tokens, no user_logged_in: a proof is owed
            try:
                mfa_token = mfa.login_token_issue(user=user)
            except InvalidToken:  # the password changed while it was being checked
                return detail_response(BAD_CREDENTIALS, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
            body: dict[str, Any] = {
                "detail": MFA_REQUIRED,
                "code": "mfa_required",
                "mfa_token": mfa_token,
                "methods": mfa.methods(user=user),
            }
            if mfa.PASSKEY in body["methods"]:
                body["passkey_options"] = passkeys.authentication_options(user=user, ceremony=passkeys.Purpose.LOGIN)
            return Response(body, status=status.HTTP_401_UNAUTHORIZED)
        return log_in(request, user)


def log_in(request: Request, user: User) -> Response:
    """The end of every API log-in (the password alone, or the password and then a second factor)."""
    try:
        tokens = sessions.session_start(
            user=user, user_agent=request.headers.get("User-Agent", ""), client_ip=client_ip(request)
        )
    except InvalidToken:  # the password changed while it was being checked
        return detail_response(BAD_CREDENTIALS, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
    # As django.contrib.auth.login() does: last_login is updated, django-axes resets the
    # failures of this account and client (and records the access), the event is written.
    request._request.login_session = tokens.session  # type: ignore[attr-defined]  # not a browser log-in
    user_logged_in.send(sender=user.__class__, request=request._request, user=user)
    body = _tokens_body(tokens) | {"session_id": tokens.session.pk, "user": UserOutputSerializer(user).data}
    return Response(body)


class TokenMfaApi(APIView):
    """``POST /api/tokens/mfa/``: the second step of a log-in — the ``mfa_token`` and a proof."""

    throttle_classes = [LoginThrottle]

    @extend_schema_serializer(component_name="LoginSecondFactor")
    class InputSerializer(StrictInputSerializer):
        mfa_token = serializers.CharField(max_length=128)
        code = serializers.CharField(
            max_length=32, required=False, help_text="A TOTP code or an unused recovery code (or `credential`)."
        )
        credential = credential_field(
            "Instead of `code`: the passkey's `AuthenticationResponseJSON` answering the log-in's `passkey_options`."
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("code" in attrs) == ("credential" in attrs):
                raise serializers.ValidationError({"code": ["Give either `code` or `credential`."]})
            return attrs

    @extend_schema(
        operation_id="token_obtain_mfa",
        summary="Log in, second step: the code or the passkey",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "TokensAfterSecondFactor",
                _token_fields() | {"session_id": serializers.UUIDField(), "user": UserOutputSerializer()},
            ),
            400: FIELD_ERRORS,
            401: OpenApiResponse(
                ERROR,
                description="One answer for a wrong, replayed or used code, a bad or replayed assertion and an "
                "unknown, used, expired or dead `mfa_token` (dead after 5 wrong proofs).",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response | HttpResponse:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        refused = detail_response(BAD_SECOND_FACTOR, "invalid_second_factor", status.HTTP_401_UNAUTHORIZED)
        try:
            user = mfa.login_token_user(token=data["mfa_token"])
        except InvalidToken:
            return refused
        proof = {"code": data.get("code"), "credential": data.get("credential")}
        try:  # a wrong proof counts like a wrong password
            user = reauth.proof_attempt(
                request=request._request,
                user=user,
                check=lambda: mfa.login_token_redeem(token=data["mfa_token"], **proof),
            )
        except LockedOut:
            return lockout_response(request._request)
        except (InvalidToken, WrongProof):
            return refused
        return log_in(request, user)


class TokenPasskeyBeginApi(APIView):
    """``POST /api/tokens/passkey/begin/``: start a log-in with a discoverable passkey alone."""

    throttle_classes = [LoginThrottle, PasskeyOptionsThrottle]  # anonymous, and each answer stores a challenge

    @extend_schema_serializer(component_name="PasskeyLoginBegin")
    class InputSerializer(StrictInputSerializer):
        pass

    @extend_schema(
        operation_id="token_passkey_begin",
        summary="Log in with a passkey: the options",
        description="`options` for `navigator.credentials.get()` (no allowed credentials: the authenticator offers "
        "its passkeys for this site; user verification required) and `passkey_token` (single use, 5 minutes) for "
        "`POST /api/tokens/passkey/`.",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "PasskeyLoginOptions", {"options": serializers.DictField(), "passkey_token": serializers.CharField()}
            ),
            400: FIELD_ERRORS,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        self.InputSerializer(data=request.data).is_valid(raise_exception=True)
        options, token = passkeys.discoverable_options()
        return Response({"options": options, "passkey_token": token})


class TokenPasskeyApi(APIView):
    """``POST /api/tokens/passkey/``: the log-in with a passkey — its user verification is the
    second factor, its possession the first."""

    throttle_classes = [LoginThrottle]

    @extend_schema_serializer(component_name="PasskeyLogin")
    class InputSerializer(StrictInputSerializer):
        passkey_token = serializers.CharField(max_length=128)
        credential = credential_field(
            "The `AuthenticationResponseJSON` answering the options of `POST /api/tokens/passkey/begin/`.",
            required=True,
        )

    @extend_schema(
        operation_id="token_passkey",
        summary="Log in with a passkey",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "TokensAfterPasskey",
                _token_fields() | {"session_id": serializers.UUIDField(), "user": UserOutputSerializer()},
            ),
            400: FIELD_ERRORS,
            401: OpenApiResponse(
                ERROR,
                description="One answer for an unknown passkey, a bad, replayed or unverified assertion and an "
                "unknown, used or expired `passkey_token`.",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response | HttpResponse:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        refused = detail_response(BAD_PASSKEY, "invalid_credentials", status.HTTP_401_UNAUTHORIZED)
        owner = passkeys.credential_owner(credential=data["credential"])

        def verify() -> User:
            return passkeys.verify(credential=data["credential"], token=data["passkey_token"])

        try:
            if owner is not None:  # a wrong answer counts like a wrong password of that account
                user = reauth.proof_attempt(request=request._request, user=owner, check=verify)
            else:
                user = verify()
        except LockedOut:
            return lockout_response(request._request)
        except WrongProof:
            if owner is None:  # no account to lock, but the address's failures count (THROTTLE_LOGIN)
                record_login_failure(request._request)
            return refused
        if not user.is_active:
            return refused
        if settings.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL and not user.is_email_verified:
            return detail_response(NOT_VERIFIED, "email_not_verified", status.HTTP_403_FORBIDDEN)
        return log_in(request, user)


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
                ERROR,
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
            return detail_response(BAD_REFRESH, "token_not_valid", status.HTTP_401_UNAUTHORIZED)
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
            401: OpenApiResponse(ERROR, description="Unknown token."),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            sessions.session_logout(refresh=serializer.validated_data["refresh"])
        except InvalidToken:
            return detail_response(BAD_REFRESH, "token_not_valid", status.HTTP_401_UNAUTHORIZED)
        return Response(status=status.HTTP_204_NO_CONTENT)
