from django.urls import path

from users import account_apis, account_views, apis, views

urlpatterns = [
    path("api/users/", apis.UserCreateApi.as_view(), name="api-user-create"),
    path("api/users/me/", account_apis.MeApi.as_view(), name="api-me"),
    path(
        "api/users/me/security-events/",
        account_apis.SecurityEventListApi.as_view(),
        name="api-security-events",
    ),
    path("api/verify-email/", apis.EmailVerifyApi.as_view(), name="api-verify-email"),
    path(
        "api/users/resend-verification/",
        apis.ResendVerificationApi.as_view(),
        name="api-resend-verification",
    ),
    path("api/users/<str:username>/", account_apis.UserUpdateApi.as_view(), name="api-user-update"),
    path("api/tokens/", account_apis.TokenObtainApi.as_view(), name="api-token-obtain"),
    path("api/tokens/mfa/", account_apis.TokenMfaApi.as_view(), name="api-token-mfa"),
    path("api/mfa/", account_apis.MfaStatusApi.as_view(), name="api-mfa"),
    path("api/mfa/totp/", account_apis.TotpApi.as_view(), name="api-mfa-totp"),
    path("api/mfa/totp/setup/", account_apis.TotpSetupApi.as_view(), name="api-mfa-totp-setup"),
    path("api/mfa/totp/confirm/", account_apis.TotpConfirmApi.as_view(), name="api-mfa-totp-confirm"),
    path("api/mfa/recovery-codes/", account_apis.RecoveryCodesApi.as_view(), name="api-mfa-recovery-codes"),
    path("api/tokens/refresh/", account_apis.TokenRefreshApi.as_view(), name="api-token-refresh"),
    path("api/tokens/logout/", account_apis.LogoutApi.as_view(), name="api-logout"),
    path("api/sessions/", account_apis.SessionListApi.as_view(), name="api-sessions"),
    path("api/sessions/<str:session_id>/", account_apis.SessionRevokeApi.as_view(), name="api-session-revoke"),
    path("api/password-reset/", account_apis.PasswordResetApi.as_view(), name="api-password-reset"),
    path(
        "api/password-reset/confirm/",
        account_apis.PasswordResetConfirmApi.as_view(),
        name="api-password-reset-confirm",
    ),
    path("signup/", views.signup, name="signup"),
    path("signup/done/", views.signup_done, name="signup-done"),
    path("verify-email/", views.verify_email, name="verify-email"),
    path("verify-email/resend/", views.resend_verification, name="resend-verification"),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("login/verify/", account_views.login_verify, name="login-verify"),
    path("logout/", account_views.LogoutView.as_view(), name="logout"),
    path("account/", account_views.account, name="account"),
    path("reset-password/", account_views.reset_password, name="reset-password"),
]
