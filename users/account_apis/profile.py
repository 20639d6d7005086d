"""The profile: ``GET, PATCH /api/users/me/`` (the user's own) and ``PATCH /api/users/<username>/``
(a banker's change of a depositor's name or address)."""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from users import identity, policies
from users.account_apis.common import (
    CURRENT_PASSWORD_WRONG,
    ENROLLMENT_FORBIDDEN,
    STEP_UP_CREDENTIAL,
    UNAUTHORISED,
    AuthenticatedApi,
    UserOutputSerializer,
    credential_field,
    step_up,
)
from users.apis import ERROR, FIELD_ERRORS, THROTTLED, StrictInputSerializer, _field
from users.errors import WrongPassword
from users.models import User
from users.services import accounts
from users.throttles import CustomerChangeThrottle


class ProfileInputSerializer(StrictInputSerializer):
    full_name = serializers.CharField(max_length=255, required=False)
    email = serializers.EmailField(max_length=254, required=False)
    password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, required=False, trim_whitespace=False)
    current_password = serializers.CharField(
        max_length=settings.PASSWORD_MAX_LENGTH,
        required=False,
        trim_whitespace=False,
        help_text="Needed for a new `email` or `password`; wrong tries count as failed log-ins.",
    )
    code = serializers.CharField(
        max_length=32,
        required=False,
        help_text="Once you have a second factor, needed with `current_password`: a TOTP or recovery code.",
    )
    credential = credential_field(STEP_UP_CREDENTIAL)

    validate_full_name = staticmethod(_field(identity.normalize_full_name))
    validate_email = staticmethod(_field(identity.normalize_email))

    def to_internal_value(self, data):
        # A field this route cannot change is refused, not ignored: a 200 would say it was changed.
        if isinstance(data, dict) and (extra := sorted(set(data) - set(self.fields))):
            raise ValidationError({name: [CANNOT_CHANGE] for name in extra})
        return super().to_internal_value(data)


CANNOT_CHANGE = "This field cannot be changed: send full_name, email or password (with current_password)."


class BankerProfileInputSerializer(StrictInputSerializer):
    full_name = serializers.CharField(max_length=255, required=False)
    email = serializers.EmailField(max_length=254, required=False)

    validate_full_name = staticmethod(_field(identity.normalize_full_name))
    validate_email = staticmethod(_field(identity.normalize_email))

    def to_internal_value(self, data):
        if isinstance(data, dict) and (extra := sorted(set(data) - policies.BANKER_FIELDS)):
            raise ValidationError({name: ["Bankers may change full_name and email only."] for name in extra})
        return super().to_internal_value(data)


class MeApi(AuthenticatedApi):
    """``GET, PATCH /api/users/me/``: the user's own profile."""

    enrollment_exempt_methods = frozenset({"GET"})  # a user who must enrol can still see who they are

    @extend_schema(operation_id="me", summary="Your profile", responses={200: UserOutputSerializer, 401: UNAUTHORISED})
    def get(self, request: Request) -> Response:
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(
        operation_id="me_update",
        summary="Change your name, address or password",
        description=(
            "A new `email` or `password` needs `current_password` and, once you have a second factor, `code` "
            "(wrong tries count as failed log-ins: the "
            "lockout applies, answered 429). A new `email` is not applied: it becomes `pending_email`, a link goes "
            "to it and a notice to the current address; it replaces `email` once the link is used, and the old "
            "address is told. A taken address is answered the same (its owner is told instead). A new `password` "
            "ends every other session, cancels a pending address change and mails a notice."
        ),
        request=ProfileInputSerializer,
        responses={
            200: UserOutputSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            403: ENROLLMENT_FORBIDDEN,
            429: THROTTLED,
        },
    )
    def patch(self, request: Request) -> Response:
        user = cast("User", request.user)
        serializer = ProfileInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "password" in data:  # before the step-up: a refused request must not spend a one-time code
            try:
                password_validation.validate_password(data["password"], user=user)
            except DjangoValidationError as exc:
                raise ValidationError({"password": list(exc.messages)}) from exc
        if ("email" in data or "password" in data) and (
            refused := step_up(
                request,
                user,
                password=data.get("current_password"),
                code=data.get("code"),
                credential=data.get("credential"),
            )
        ):
            return refused
        try:
            user = accounts.profile_update(
                user=user, full_name=data.get("full_name"), email=data.get("email"), password=data.get("password")
            )
        except WrongPassword:  # another change of the password won the race
            raise ValidationError({"current_password": [CURRENT_PASSWORD_WRONG]}) from None
        return Response(UserOutputSerializer(user).data)


class UserUpdateApi(AuthenticatedApi):
    """``PATCH /api/users/<username>/``: a banker changes a depositor's name or address."""

    @extend_schema(
        operation_id="user_update",
        summary="A banker changes a depositor's name or address",
        description="Bankers only (`role` `banker`), on depositors only — never staff, superusers, bankers or "
        "themself — and `full_name` and `email` only: never a password. The address follows the pending rule "
        "(a link to the new address, a notice to the current one); the user is mailed a notice naming what "
        "changed, and the change is a security event with the banker as actor.",
        request=BankerProfileInputSerializer,
        responses={
            200: UserOutputSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            403: OpenApiResponse(
                ERROR,
                description="Not a banker, or a target that is staff, a superuser, a banker or the caller; "
                "`code` `mfa_enrollment_required`: a banker without a second factor (`MFA_REQUIRED_ROLES`).",
            ),
            404: OpenApiResponse(ERROR, description="No such user (asked by a banker)."),
            405: OpenApiResponse(
                ERROR,
                description="`resend-verification`: the path of `POST /api/users/resend-verification/`, a "
                "name no account can have.",
            ),
            429: THROTTLED,
        },
    )
    def patch(self, request: Request, username: str) -> Response:
        banker = cast("User", request.user)
        if banker.role != User.Role.BANKER:
            raise PermissionDenied("Only bankers may change other people's profiles.")
        # A name no account can have (a NUL, say) is nobody: 404, not the database's error.
        valid = "\x00" not in username and len(username) <= 150
        user = User.objects.filter(username_canonical=identity.canonical_username(username)).first() if valid else None
        if user is None:
            raise NotFound("No such user.")
        if not policies.can_change_profile(banker, user):
            raise PermissionDenied("Bankers may change depositors' profiles only (use /api/users/me/ for your own).")
        serializer = BankerProfileInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Counted only for a request that changes something (one that changes nothing mails nothing).
        if accounts.banker_changes(user=user, full_name=data.get("full_name"), email=data.get("email")):
            throttle = CustomerChangeThrottle()
            throttle.target = str(user.pk)
            if not throttle.allow_request(request, self):
                raise Throttled(wait=throttle.wait())
        user = accounts.profile_update_by_banker(
            banker=banker, user=user, full_name=data.get("full_name"), email=data.get("email")
        )
        return Response(UserOutputSerializer(user).data)
