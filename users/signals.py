"""Signals of the users app (what the model layer tells the services, without importing them)."""

from django.dispatch import Signal

# Sent by ``User.save()`` when a new password was saved, inside the saving transaction; ``user``.
password_changed = Signal()

# Sent by ``User.save()`` when an existing account is saved inactive, inside the saving transaction; ``user``.
account_deactivated = Signal()
