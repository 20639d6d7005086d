"""Password reset: ``POST /api/password-reset/``, ``POST /api/password-reset/challenge/`` (the
passkey options for a user with one) and ``POST /api/password-reset/confirm/``."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users import identity
from users.account_apis.common import credential_field, detail_response, step_up
from users.apis import DETAIL, FIELD_ERRORS, THROTTLED, StrictInputSerializer, _field
from users.errors import InvalidToken
from users.mfa import passkeys
from users.services import accounts
from users.throttles import PasswordResetAddressThrottle, PasswordResetThrottle

BAD_RESET_LINK = "This password reset link is invalid or has expired."
RESET_ACCEPTED = "If that address has an account, an email with a link to choose a new password is on its way."


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


class PasswordResetChallengeApi(APIView):
    """``POST /api/password-reset/challenge/``: passkey options for the reset link's user."""

    throttle_classes = [PasswordResetThrottle]

    @extend_schema_serializer(component_name="PasswordResetChallenge")
    class InputSerializer(StrictInputSerializer):
        uid = serializers.CharField(max_length=64)
        token = serializers.CharField(max_length=128)

    @extend_schema(
        operation_id="password_reset_challenge",
        summary="Passkey options for a reset",
        description="For a working link of an account with a passkey: `passkey_options` "
        "(`PublicKeyCredentialRequestOptionsJSON`); its answer is the `credential` of the confirmation. An "
        "account without a passkey gets an empty `passkey_options` (null).",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "PasswordResetChallengeOptions", {"passkey_options": serializers.DictField(allow_null=True)}
            ),
            400: OpenApiResponse(
                FIELD_ERRORS.response,
                description="`detail` with `code` `invalid_link`: the one answer for a wrong, used or expired link; "
                "field errors for malformed input.",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            user = accounts.password_reset_user(uid=data["uid"], token=data["token"])
        except InvalidToken:
            return detail_response(BAD_RESET_LINK, "invalid_link", status.HTTP_400_BAD_REQUEST)
        options = (
            passkeys.authentication_options(user=user, ceremony=passkeys.Purpose.RESET)
            if passkeys.has_passkey(user=user)
            else None
        )
        return Response({"passkey_options": options})


class PasswordResetConfirmApi(APIView):
    """``POST /api/password-reset/confirm/``: set the new password through the emailed link."""

    throttle_classes = [PasswordResetThrottle]

    @extend_schema_serializer(component_name="PasswordResetConfirm")
    class InputSerializer(StrictInputSerializer):
        uid = serializers.CharField(max_length=64)
        token = serializers.CharField(max_length=128)
        new_password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, trim_whitespace=False)
        code = serializers.CharField(
            max_length=32,
            required=False,
            help_text="Needed when the account has a second factor: a TOTP code or a recovery code.",
        )
        credential = credential_field(
            "Instead of `code`, for an account with a passkey: its assertion answering the `passkey_options` of "
            "`POST /api/password-reset/challenge/`."
        )

    @extend_schema(
        operation_id="password_reset_confirm",
        summary="Choose a new password (every session ends)",
        request=InputSerializer,
        responses={
            204: None,
            400: OpenApiResponse(
                FIELD_ERRORS.response,
                description="One identical `detail` with `code` `invalid_link` for a wrong, used or expired link; "
                "field errors for a weak "
                "password, and for a missing or wrong `code` when the account has a second factor (the link stays "
                "usable).",
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            # A reset never bypasses the second factor; refused for its proof, the link stays usable.
            user = accounts.password_reset_user(uid=data["uid"], token=data["token"])
            # The new password before the proof: a refused request must not spend a one-time code.
            password_validation.validate_password(data["new_password"], user=user)
            if refused := step_up(
                request,
                user,
                password=None,
                code=data.get("code"),
                credential=data.get("credential"),
                password_needed=False,
            ):
                return refused
            accounts.password_reset_confirm(uid=data["uid"], token=data["token"], new_password=data["new_password"])
        except InvalidToken:
            return detail_response(BAD_RESET_LINK, "invalid_link", status.HTTP_400_BAD_REQUEST)
        except DjangoValidationError as exc:
            raise ValidationError({"new_password": list(exc.messages)}) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
