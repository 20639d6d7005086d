"""The second factor over the API: ``GET /api/mfa/``, ``POST /api/mfa/totp/setup/``,
``POST /api/mfa/totp/confirm/``, ``DELETE /api/mfa/totp/``, ``POST /api/mfa/recovery-codes/``,
``POST /api/mfa/passkeys/begin/``, ``POST /api/mfa/passkeys/``, ``DELETE /api/mfa/passkeys/<id>/``
and ``POST /api/mfa/challenge/``.

Every change but the confirmations re-authenticates (``common.step_up``: ``current_password`` and,
once the user has a factor, ``code`` or ``credential``). These routes stay open to a user who must enrol
(``MFA_REQUIRED_ROLES``): they are how one does.
"""

from __future__ import annotations

from typing import cast

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from users import identity, reauth
from users.account_apis.common import (
    CODE_WRONG,
    CREDENTIAL_WRONG,
    STEP_UP_CREDENTIAL,
    UNAUTHORISED,
    AuthenticatedApi,
    credential_field,
    detail_response,
    step_up,
)
from users.apis import ERROR, FIELD_ERRORS, THROTTLED, StrictInputSerializer, _field
from users.auth import lockout_response
from users.errors import FactorStateError, LockedOut, WrongProof
from users.mfa import flows as mfa
from users.mfa import passkeys
from users.models import Passkey, User

FIELDS_OR_STATE = OpenApiResponse(
    FIELD_ERRORS.response,
    description=FIELD_ERRORS.description + " Or `detail` with `code` `mfa_state`: your factors' state refuses the "
    "change (TOTP on already, TOTP not on, no factor yet for recovery codes, a set-up expired); checked before the "
    "proof, so a code sent with it is not spent.",
)

RECOVERY_CODES = inline_serializer(
    "RecoveryCodes",
    {"recovery_codes": serializers.ListField(child=serializers.CharField(), help_text="Shown this once.")},
)


class StepUpInputSerializer(StrictInputSerializer):
    current_password = serializers.CharField(max_length=settings.PASSWORD_MAX_LENGTH, trim_whitespace=False)
    code = serializers.CharField(
        max_length=32, required=False, help_text="Once you have a second factor: a TOTP or recovery code."
    )
    credential = credential_field(STEP_UP_CREDENTIAL)


class PasskeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)


class MfaApi(AuthenticatedApi):
    enrollment_exempt_methods = frozenset({"GET", "POST", "DELETE"})
    InputSerializer: type[StrictInputSerializer] = StepUpInputSerializer

    def _step_up(self, request: Request, change: str | None = None) -> Response | None:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if change:  # refused for the factors' state before the proof is spent
            mfa.change_allowed(user=self._user(request), change=change)
        return step_up(
            request,
            self._user(request),
            password=data["current_password"],
            code=data.get("code"),
            credential=data.get("credential"),
        )

    @staticmethod
    def _user(request: Request) -> User:
        return cast("User", request.user)

    def handle_exception(self, exc: Exception) -> Response:
        # A change the factors' state does not allow (TOTP on already, nothing to turn off): one answer.
        if isinstance(exc, FactorStateError):
            return detail_response(str(exc), "mfa_state", status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)


class MfaStatusApi(MfaApi):
    """``GET /api/mfa/``: which factors the user has."""

    @extend_schema(
        operation_id="mfa_status",
        summary="Your second factors",
        responses={
            200: inline_serializer(
                "MfaStatus",
                {
                    "totp": serializers.BooleanField(),
                    "recovery_codes_left": serializers.IntegerField(),
                    "passkeys": PasskeyOutputSerializer(many=True),
                },
            ),
            401: UNAUTHORISED,
        },
    )
    def get(self, request: Request) -> Response:
        found = mfa.status(user=self._user(request))
        return Response(
            {
                "totp": found.totp,
                "recovery_codes_left": found.recovery_codes_left,
                "passkeys": PasskeyOutputSerializer(found.passkeys, many=True).data,
            }
        )


class TotpSetupApi(MfaApi):
    """``POST /api/mfa/totp/setup/``: a new secret for an authenticator app, pending until confirmed."""

    @extend_schema_serializer(component_name="TotpSetup")
    class InputSerializer(StepUpInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_totp_setup",
        summary="Start setting up an authenticator app (TOTP)",
        description="Needs `current_password` (and `code` once you have a factor). The answer is the only time "
        "the secret is shown; TOTP is off until `POST /api/mfa/totp/confirm/` with a first code.",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "TotpSecret",
                {
                    "secret": serializers.CharField(),
                    "otpauth_uri": serializers.CharField(),
                    "qr_svg": serializers.CharField(),
                },
            ),
            400: FIELDS_OR_STATE,
            401: UNAUTHORISED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        if refused := self._step_up(request, "totp_setup"):
            return refused
        setup = mfa.totp_setup(user=self._user(request))
        return Response({"secret": setup.secret, "otpauth_uri": setup.otpauth_uri, "qr_svg": setup.qr_svg})


class TotpConfirmApi(MfaApi):
    """``POST /api/mfa/totp/confirm/``: the first code turns TOTP on; ten recovery codes, shown once."""

    @extend_schema_serializer(component_name="TotpConfirm")
    class InputSerializer(StrictInputSerializer):
        code = serializers.CharField(max_length=32, help_text="The code the app shows now.")

    @extend_schema(
        operation_id="mfa_totp_confirm",
        summary="Turn TOTP on with a first code",
        request=InputSerializer,
        responses={200: RECOVERY_CODES, 400: FIELDS_OR_STATE, 401: UNAUTHORISED, 429: THROTTLED},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = self._user(request)
        code = serializer.validated_data["code"]
        try:  # guesses cost what a wrong password does
            codes = reauth.proof_attempt(
                request=request._request, user=user, check=lambda: mfa.totp_confirm(user=user, code=code)
            )
        except LockedOut:
            return cast("Response", lockout_response(request._request))
        except WrongProof:
            raise ValidationError({"code": [CODE_WRONG]}) from None
        return Response({"recovery_codes": codes})


class TotpApi(MfaApi):
    """``DELETE /api/mfa/totp/``: TOTP off (a notice is mailed)."""

    @extend_schema_serializer(component_name="TotpDisable")
    class InputSerializer(StepUpInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_totp_disable",
        summary="Turn TOTP off",
        description="A JSON body (OpenAPI shows none for `DELETE`): `current_password`, and `code` or `credential` "
        "(the second factor). With the last factor the recovery codes go too.",
        request=InputSerializer,
        responses={204: None, 400: FIELDS_OR_STATE, 401: UNAUTHORISED, 429: THROTTLED},
    )
    def delete(self, request: Request) -> Response:
        if refused := self._step_up(request, "totp_disable"):
            return refused
        mfa.totp_disable(user=self._user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecoveryCodesApi(MfaApi):
    """``POST /api/mfa/recovery-codes/``: ten new recovery codes; the old ones stop working."""

    @extend_schema_serializer(component_name="RecoveryCodesRegenerate")
    class InputSerializer(StepUpInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_recovery_codes_regenerate",
        summary="New recovery codes",
        request=InputSerializer,
        responses={200: RECOVERY_CODES, 400: FIELDS_OR_STATE, 401: UNAUTHORISED, 429: THROTTLED},
    )
    def post(self, request: Request) -> Response:
        if refused := self._step_up(request, "recovery_codes"):
            return refused
        codes = mfa.recovery_codes_regenerate(user=self._user(request))
        return Response({"recovery_codes": codes})


class PasskeyBeginApi(MfaApi):
    """``POST /api/mfa/passkeys/begin/``: the options for the browser's ``navigator.credentials.create()``."""

    @extend_schema_serializer(component_name="PasskeyBegin")
    class InputSerializer(StepUpInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_passkey_begin",
        summary="Start adding a passkey",
        description="Needs `current_password` (and `code` or `credential` once you have a factor). `options` is a "
        "`PublicKeyCredentialCreationOptionsJSON` (base64url) for the relying party `SITE_URL`'s host; answer it "
        "within 5 minutes with `POST /api/mfa/passkeys/`.",
        request=InputSerializer,
        responses={
            200: inline_serializer("PasskeyCreationOptions", {"options": serializers.DictField()}),
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        if refused := self._step_up(request, "passkey_begin"):
            return refused
        return Response({"options": passkeys.registration_options(user=self._user(request))})


class PasskeyListApi(MfaApi):
    """``POST /api/mfa/passkeys/``: keep the passkey the authenticator made for the last options."""

    @extend_schema_serializer(component_name="PasskeyAdd")
    class InputSerializer(StrictInputSerializer):
        name = serializers.CharField(
            max_length=identity.PASSKEY_NAME_MAX_LENGTH,
            help_text="Your name for it, e.g. the device, shown in your list of passkeys (never in an email; no "
            "links, no line breaks).",
        )
        credential = credential_field("The `RegistrationResponseJSON` answering the options.", required=True)

        validate_name = staticmethod(_field(identity.normalize_passkey_name))

    @extend_schema(
        operation_id="mfa_passkey_add",
        summary="Add a passkey",
        description="A notice is mailed. With the passkey as your first factor, `recovery_codes` (10, shown once).",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "PasskeyAdded",
                {
                    "id": serializers.IntegerField(),
                    "name": serializers.CharField(),
                    "created_at": serializers.DateTimeField(),
                    "last_used_at": serializers.DateTimeField(allow_null=True),
                    "recovery_codes": serializers.ListField(child=serializers.CharField(), required=False),
                },
            ),
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            added = mfa.passkey_add(user=self._user(request), name=data["name"], credential=data["credential"])
        except WrongProof:
            raise ValidationError({"credential": [CREDENTIAL_WRONG]}) from None
        body = dict(PasskeyOutputSerializer(added.passkey).data)
        if added.recovery_codes is not None:
            body["recovery_codes"] = added.recovery_codes
        return Response(body, status=status.HTTP_201_CREATED)


class PasskeyApi(MfaApi):
    """``DELETE /api/mfa/passkeys/<id>/``: remove one of your passkeys."""

    @extend_schema_serializer(component_name="PasskeyRemove")
    class InputSerializer(StepUpInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_passkey_remove",
        parameters=[OpenApiParameter("passkey_id", int, OpenApiParameter.PATH, description="The passkey's `id`.")],
        summary="Remove a passkey",
        description="A JSON body (OpenAPI shows none for `DELETE`): `current_password`, and `code` or `credential` "
        "(the second factor). With the last factor the recovery codes go too.",
        request=InputSerializer,
        responses={
            204: None,
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            404: OpenApiResponse(ERROR, description="`code` `not_found`: not one of your passkeys."),
            429: THROTTLED,
        },
    )
    def delete(self, request: Request, passkey_id: str) -> Response:
        user = self._user(request)
        # Any path segment reaches the view (a JSON 404, not the resolver's HTML one, for garbage).
        number = int(passkey_id) if passkey_id.isascii() and passkey_id.isdigit() and len(passkey_id) < 19 else None
        if number is None or not Passkey.objects.filter(user=user, pk=number).exists():
            raise NotFound("You have no such passkey.")
        if refused := self._step_up(request):
            return refused
        try:
            mfa.passkey_remove(user=user, passkey_id=number)
        except Passkey.DoesNotExist:
            raise NotFound("You have no such passkey.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class MfaChallengeApi(MfaApi):
    """``POST /api/mfa/challenge/``: options for a passkey's assertion, the ``credential`` of a step-up."""

    @extend_schema_serializer(component_name="MfaChallenge")
    class InputSerializer(StrictInputSerializer):
        pass

    @extend_schema(
        operation_id="mfa_challenge",
        summary="Options for a passkey step-up proof",
        description="`passkey_options` (`PublicKeyCredentialRequestOptionsJSON`) allowing your passkeys; its "
        "answer is the `credential` of one sensitive request, within 5 minutes.",
        request=InputSerializer,
        responses={
            200: inline_serializer("MfaChallengeOptions", {"passkey_options": serializers.DictField()}),
            400: FIELD_ERRORS,
            401: UNAUTHORISED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        self.InputSerializer(data=request.data).is_valid(raise_exception=True)
        return Response(
            {
                "passkey_options": passkeys.authentication_options(
                    user=self._user(request), ceremony=passkeys.Purpose.STEP_UP
                )
            }
        )
