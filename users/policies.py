"""Who may do what to whom: one named policy per action, decided here and nowhere else."""

from __future__ import annotations

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
