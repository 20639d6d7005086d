"""What every account API shares: the user's output, the authenticated base view, error bodies."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, MethodNotAllowed, ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users import policies, reauth
from users.auth import SessionJWTAuthentication, lockout_response
from users.errors import LockedOut, ProofMissing, WrongPassword, WrongProof
from users.mfa import flows as mfa
from users.models import User
from users.throttles import AccountThrottle

UNAUTHORISED = OpenApiResponse(
    response=inline_serializer("AuthError", {"detail": serializers.CharField(), "code": serializers.CharField()}),
    description="No valid access token, or its session ended (logged out, revoked, blocked, expired).",
)


CURRENT_PASSWORD_NEEDED = "Give your current password to make this change."  # noqa: S105 - a message
CURRENT_PASSWORD_WRONG = "That is not your current password."  # noqa: S105 - a message
CODE_NEEDED = "Give a code from your authenticator app, or one of your recovery codes."
CODE_WRONG = "That code is wrong, or was used already."
CREDENTIAL_WRONG = "That passkey's answer is wrong, was used already, or its challenge expired."


def step_up(
    request: Request,
    user: User,
    *,
    password: str | None,
    code: str | None,
    credential: dict[str, Any] | None = None,
    password_needed: bool = True,
) -> Response | None:
    """``users.reauth.reauthenticate`` for an API view: None when the request proved the password
    and (once the user has one) a second factor; else the lockout answer, or a ``400`` raised with
    the field at fault (``current_password``, ``code`` or ``credential``)."""
    try:
        reauth.reauthenticate(
            request=request._request,
            user=user,
            password=password,
            code=code,
            credential=credential,
            password_needed=password_needed,
        )
    except LockedOut:
        return cast("Response", lockout_response(request._request))
    except WrongPassword:
        message = CURRENT_PASSWORD_WRONG if password else CURRENT_PASSWORD_NEEDED
        raise ValidationError({"current_password": [message]}) from None
    except ProofMissing:
        raise ValidationError({"code": [CODE_NEEDED]}) from None
    except WrongProof:
        if credential is not None:
            raise ValidationError({"credential": [CREDENTIAL_WRONG]}) from None
        raise ValidationError({"code": [CODE_WRONG]}) from None
    return None


def credential_field(help_text: str, *, required: bool = False) -> serializers.DictField:
    """A passkey's answer: the WebAuthn ``…ResponseJSON`` object (base64url fields), checked by
    ``users.mfa.passkeys`` (anything malformed is a wrong proof, never a 500)."""
    return serializers.DictField(required=required, help_text=help_text)


STEP_UP_CREDENTIAL = (
    "Instead of `code`, once you have a passkey: its assertion (`AuthenticationResponseJSON`) answering the "
    "`passkey_options` of `POST /api/mfa/challenge/`."
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


ENROLLMENT_REQUIRED = (
    "Set up a second factor first (an authenticator app: POST /api/mfa/totp/setup/, or a passkey: "
    "POST /api/mfa/passkeys/begin/): your role requires one."
)
ENROLLMENT_FORBIDDEN = OpenApiResponse(
    response=inline_serializer(
        "EnrollmentRequired", {"detail": serializers.CharField(), "code": serializers.CharField()}
    ),
    description="`code` `mfa_enrollment_required`: the user's role (`MFA_REQUIRED_ROLES`) needs a second factor "
    "and they have none yet.",
)


class EnrollmentRequired(APIException):
    status_code = 403
    default_code = "mfa_enrollment_required"

    def __init__(self) -> None:
        super().__init__({"detail": ENROLLMENT_REQUIRED, "code": self.default_code})


class HasRequiredSecondFactor(BasePermission):
    """``MFA_REQUIRED_ROLES`` (``policies.must_have_second_factor``): such a user without a factor
    gets ``403`` ``mfa_enrollment_required`` — but on the methods a view lists in
    ``enrollment_exempt_methods`` (the second factor's own routes, reading ``/api/users/me/``)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in getattr(view, "enrollment_exempt_methods", ()):
            return True
        user = request.user
        if isinstance(user, User) and policies.must_have_second_factor(user) and not mfa.has_factor(user=user):
            raise EnrollmentRequired
        return True


class AuthenticatedApi(APIView):
    authentication_classes = [SessionJWTAuthentication]
    permission_classes = [IsAuthenticated, HasRequiredSecondFactor]
    enrollment_exempt_methods: frozenset[str] = frozenset()
    throttle_classes = [AccountThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A method the view doesn't have is a 405 before it is a 401.
        method = request.method or ""
        if not hasattr(self, method.lower()):
            raise MethodNotAllowed(method)
        super().initial(request, *args, **kwargs)
