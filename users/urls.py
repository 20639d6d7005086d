from django.urls import path

from users import apis, views

urlpatterns = [
    path("api/users/", apis.UserCreateApi.as_view(), name="api-user-create"),
    path("api/verify-email/", apis.EmailVerifyApi.as_view(), name="api-verify-email"),
    path(
        "api/users/resend-verification/",
        apis.ResendVerificationApi.as_view(),
        name="api-resend-verification",
    ),
    path("signup/", views.signup, name="signup"),
    path("signup/done/", views.signup_done, name="signup-done"),
    path("verify-email/", views.verify_email, name="verify-email"),
    path("verify-email/resend/", views.resend_verification, name="resend-verification"),
]
