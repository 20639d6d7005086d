"""JSON API: one view per operation, each with its own input and output serializers."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users import services
from users.models import User
from users.throttles import ResendAddressThrottle, ResendThrottle, SignupThrottle, VerifyThrottle

INVALID_LINK = "This verification link is invalid or has expired."


class UserCreateApi(APIView):
    """``POST /api/users/``: sign up; the verification email is queued after commit.

    An address that already has an account gets the very same answer (see ``user_create``).
    """

    throttle_classes = [SignupThrottle]

    class InputSerializer(serializers.Serializer):
        username = serializers.RegexField(
            r"^[\w.@+-]+\Z",
            max_length=150,
            error_messages={"invalid": "Letters, digits and @/./+/-/_ only."},
        )
        full_name = serializers.CharField(max_length=255)
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(
            max_length=settings.PASSWORD_MAX_LENGTH, write_only=True, trim_whitespace=False
        )

        def validate(self, attrs: dict) -> dict:
            candidate = User(username=attrs["username"], email=attrs["email"], full_name=attrs["full_name"])
            try:
                password_validation.validate_password(attrs["password"], user=candidate)
            except DjangoValidationError as exc:
                raise ValidationError({"password": list(exc.messages)}) from exc
            return attrs

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["username", "full_name", "email", "is_email_verified", "created_at"]

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = services.user_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


class EmailVerifyApi(APIView):
    """``POST /api/verify-email/``: consume a verification code."""

    throttle_classes = [VerifyThrottle]

    class InputSerializer(serializers.Serializer):
        email_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
        secret_code = serializers.CharField(max_length=512, trim_whitespace=True)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            services.email_verify(
                verification_id=serializer.validated_data["email_id"],
                code=serializer.validated_data["secret_code"],
            )
        except services.InvalidVerificationCode:
            return Response({"detail": INVALID_LINK}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"is_verified": True})


RESEND_ACCEPTED = "If that address has an account waiting for verification, a new link is on its way."


class ResendVerificationApi(APIView):
    """``POST /api/users/resend-verification/``: always 202, known address or not."""

    throttle_classes = [ResendThrottle, ResendAddressThrottle]

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.verification_resend_request(email=serializer.validated_data["email"])
        return Response({"detail": RESEND_ACCEPTED}, status=status.HTTP_202_ACCEPTED)
