"""Who may do what to whom: one named policy per action, decided here and nowhere else."""

from __future__ import annotations

from django.conf import settings

from users.models import User

# What a banker may change on someone else's profile (never a password).
BANKER_FIELDS = frozenset({"full_name", "email"})


def can_change_profile(actor: User, target: User) -> bool:
    """A banker changes the name and address of depositors only: never of staff, superusers, other
    bankers, or themself (they use ``/api/users/me/``, which asks for their password)."""
    return (
        actor.is_active
        and actor.role == User.Role.BANKER
        and target.pk != actor.pk
        and target.role == User.Role.DEPOSITOR
        and not target.is_staff
        and not target.is_superuser
    )


def can_admin_change(actor: User, target: User) -> bool:
    """Who may change whom in the admin (the change form and the password form): superusers
    anyone; other staff depositors, bankers and themself — never a superuser or another member of
    staff, so a staff account can't be used to take over the accounts that run the bank."""
    if actor.is_superuser:
        return True
    if target.is_superuser:
        return False
    return not target.is_staff or target.pk == actor.pk


# What only a superuser changes in the admin: who is staff, and with which permissions.
SUPERUSER_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


def must_have_second_factor(user: User) -> bool:
    """``MFA_REQUIRED_ROLES``: whether ``user`` must set up a second factor before using the API
    (``staff`` covers superusers, who are not ``depositor`` whatever their role field says; ``all``
    everyone; ``none`` nobody)."""
    roles = set(settings.MFA_REQUIRED_ROLES)
    if "none" in roles or not user.is_authenticated:
        return False
    if "all" in roles:
        return True
    held = {user.role}
    if user.is_staff or user.is_superuser:  # staff are staff, not depositors (the field's default)
        held = {"staff"} | (held - {User.Role.DEPOSITOR})
    return bool(held & roles)
