"""The operator's admin: users with the state of their verification email, every email the
service sent or owes, verification links (never their secret), sessions and security events,
and the queue overview. One module per part; importing the package registers them all."""

from users.admin import accounts, emails, security, site
from users.admin.accounts import UserAdmin
from users.admin.site import admin_login, own_password_change, queue_overview

__all__ = [
    "UserAdmin",
    "accounts",
    "admin_login",
    "emails",
    "own_password_change",
    "queue_overview",
    "security",
    "site",
]
