"""JSON API: one view per operation, each with its own input and output serializers."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bankproject.api_schema import ERROR as ERROR  # the error shapes, for the other API modules
from bankproject.api_schema import THROTTLED
from users import identity
from users.errors import InvalidLink
from users.models import User
from users.services import links, signup
from users.throttles import ResendAddressThrottle, ResendThrottle, SignupThrottle, VerifyThrottle

INVALID_LINK = "This verification link is invalid or has expired."


class StrictInputSerializer(serializers.Serializer):
    """Text fields take JSON strings only (DRF would quietly turn 0 or true into "0", "True")."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {
                name: ["Not a valid string."]
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField) and name in data and not isinstance(data[name], str)
            }
            if errors:
                raise ValidationError(errors)
        return super().to_internal_value(data)


def _field(normalize):
    """A serializer ``validate_<field>`` from one of ``users.identity``'s normalisers."""

    def validate(value: str) -> str:
        try:
            return normalize(value)
        except DjangoValidationError as exc:
            raise ValidationError(list(exc.messages)) from exc

    return validate


# Error answers, as DRF renders them: field errors, or a single "detail".
FIELD_ERRORS = OpenApiResponse(
    response=inline_serializer(
        "FieldErrors", {"field": serializers.ListField(child=serializers.CharField(), required=False)}
    ),
    description='Invalid input: `{"<field>": ["<message>", ...]}` for each wrong field, or `{detail, code}` '
    "(`parse_error` for a body that is not JSON).",
    examples=[OpenApiExample("taken username", value={"username": ["A user with that username already exists."]})],
)
DETAIL = inline_serializer("Detail", {"detail": serializers.CharField()})  # an accepted request's words


class UserCreateApi(APIView):
    """``POST /api/users/``: sign up; the verification email is queued after commit.

    An address that already has an account gets the very same answer (see ``user_create``).
    """

    throttle_classes = [SignupThrottle]

    @extend_schema_serializer(component_name="Signup")
    class InputSerializer(StrictInputSerializer):
        username = serializers.CharField(max_length=150, help_text="ASCII letters, digits and ./+/-/_ (no @).")
        full_name = serializers.CharField(max_length=255)
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(
            max_length=settings.PASSWORD_MAX_LENGTH, write_only=True, trim_whitespace=False
        )

        validate_username = staticmethod(_field(identity.normalize_username))
        validate_full_name = staticmethod(_field(identity.normalize_full_name))
        validate_email = staticmethod(_field(identity.normalize_email))

        def validate(self, attrs: dict) -> dict:
            candidate = User(username=attrs["username"], email=attrs["email"], full_name=attrs["full_name"])
            try:
                password_validation.validate_password(attrs["password"], user=candidate)
            except DjangoValidationError as exc:
                raise ValidationError({"password": list(exc.messages)}) from exc
            return attrs

    @extend_schema_serializer(component_name="SignupOutput")
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["username", "full_name", "email", "is_email_verified", "created_at"]

    @extend_schema(
        operation_id="signup",
        summary="Sign up",
        description=(
            "Creates the user and queues the verification email once the sign-up is committed. An email "
            "address that already has an account gets exactly the same answer (no account is created; that "
            "address is told by email instead)."
        ),
        request=InputSerializer,
        responses={201: OutputSerializer, 400: FIELD_ERRORS, 429: THROTTLED},
        examples=[
            OpenApiExample(
                "sign-up",
                request_only=True,
                value={
                    "username": "ada",
                    "full_name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "password": "correct horse battery staple",
                },
            ),
            OpenApiExample(
                "created",
                response_only=True,
                status_codes=["201"],
                value={
                    "username": "ada",
                    "full_name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "is_email_verified": False,
                    "created_at": "2026-11-28T12:00:00Z",
                },
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = signup.user_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


class EmailVerifyApi(APIView):
    """``POST /api/verify-email/``: consume a verification code."""

    throttle_classes = [VerifyThrottle]

    @extend_schema_serializer(component_name="VerifyEmail")
    class InputSerializer(StrictInputSerializer):
        email_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
        secret_code = serializers.CharField(max_length=512, trim_whitespace=True)

    @extend_schema(
        operation_id="verify_email",
        summary="Verify an email address",
        request=InputSerializer,
        responses={
            200: inline_serializer("Verified", {"is_verified": serializers.BooleanField()}),
            400: OpenApiResponse(
                response=inline_serializer(
                    "VerifyEmailError",
                    {
                        "detail": serializers.CharField(required=False),
                        "code": serializers.CharField(required=False, help_text="`invalid_link`"),
                        "email_id": serializers.ListField(child=serializers.CharField(), required=False),
                        "secret_code": serializers.ListField(child=serializers.CharField(), required=False),
                    },
                ),
                description=(
                    "A wrong, used, expired or replaced code: one identical `detail` (`code` `invalid_link`) for "
                    "all of them. "
                    "Malformed input: field errors."
                ),
                examples=[OpenApiExample("invalid", value={"detail": INVALID_LINK, "code": "invalid_link"})],
            ),
            429: THROTTLED,
        },
        examples=[
            OpenApiExample(
                "verify",
                request_only=True,
                value={"email_id": 42, "secret_code": "bf4RglFzO99W0gZi8b4ptDzy1O51Vh8jxcnmVdhhI9w"},
            ),
            OpenApiExample("verified", response_only=True, status_codes=["200"], value={"is_verified": True}),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            links.email_verify(
                verification_id=serializer.validated_data["email_id"],
                code=serializer.validated_data["secret_code"],
            )
        except InvalidLink:
            return Response({"detail": INVALID_LINK, "code": "invalid_link"}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"is_verified": True})


RESEND_ACCEPTED = "If that address has an account waiting for verification, a new link is on its way."


class ResendVerificationApi(APIView):
    """``POST /api/users/resend-verification/``: always 202, known address or not."""

    throttle_classes = [ResendThrottle, ResendAddressThrottle]

    @extend_schema_serializer(component_name="ResendVerification")
    class InputSerializer(StrictInputSerializer):
        email = serializers.EmailField(max_length=254)

        validate_email = staticmethod(_field(identity.normalize_email))

    @extend_schema(
        operation_id="resend_verification",
        summary="Send a new verification link",
        description="Always 202, whether or not the address is known or already verified; at most one email "
        "per address per cooldown (180 s by default). A new link replaces older unused ones.",
        request=InputSerializer,
        responses={202: DETAIL, 400: FIELD_ERRORS, 429: THROTTLED},
        examples=[
            OpenApiExample("resend", request_only=True, value={"email": "ada@example.com"}),
            OpenApiExample("accepted", response_only=True, status_codes=["202"], value={"detail": RESEND_ACCEPTED}),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        signup.verification_resend_request(email=serializer.validated_data["email"])
        return Response({"detail": RESEND_ACCEPTED}, status=status.HTTP_202_ACCEPTED)
