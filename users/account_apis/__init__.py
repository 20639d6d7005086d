"""JSON API of the account after sign-up, one module per flow (each view calls one service):

- ``tokens``: log-in, refresh, log-out
- ``profile``: the user's own profile, a banker's change of a depositor's
- ``sessions``: live sessions, ending one, the security events
- ``password_reset``: asking for a link, choosing the new password
- ``mfa``: the second factor (TOTP, recovery codes, passkeys); its log-in steps are in ``tokens``

Every error body is JSON with ``detail`` (and ``code`` where named); throttled answers are 429
with Retry-After.
"""

from users.account_apis.mfa import (
    MfaChallengeApi,
    MfaStatusApi,
    PasskeyApi,
    PasskeyBeginApi,
    PasskeyListApi,
    RecoveryCodesApi,
    TotpApi,
    TotpConfirmApi,
    TotpSetupApi,
)
from users.account_apis.password_reset import PasswordResetApi, PasswordResetChallengeApi, PasswordResetConfirmApi
from users.account_apis.profile import MeApi, UserUpdateApi
from users.account_apis.sessions import SecurityEventListApi, SessionListApi, SessionRevokeApi
from users.account_apis.tokens import (
    LogoutApi,
    TokenMfaApi,
    TokenObtainApi,
    TokenPasskeyApi,
    TokenPasskeyBeginApi,
    TokenRefreshApi,
)

__all__ = [
    "LogoutApi",
    "MeApi",
    "MfaChallengeApi",
    "MfaStatusApi",
    "PasskeyApi",
    "PasskeyBeginApi",
    "PasskeyListApi",
    "PasswordResetApi",
    "PasswordResetChallengeApi",
    "PasswordResetConfirmApi",
    "RecoveryCodesApi",
    "SecurityEventListApi",
    "SessionListApi",
    "SessionRevokeApi",
    "TokenMfaApi",
    "TokenObtainApi",
    "TokenPasskeyApi",
    "TokenPasskeyBeginApi",
    "TokenRefreshApi",
    "TotpApi",
    "TotpConfirmApi",
    "TotpSetupApi",
    "UserUpdateApi",
]
