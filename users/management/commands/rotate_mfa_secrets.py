from django.core.management.base import BaseCommand, CommandError

from users.mfa import totp


class Command(BaseCommand):
    help = (
        "Encrypt every TOTP secret again under the current key (MFA_ENCRYPTION_KEY, or DJANGO_SECRET_KEY when "
        "that is empty), after a key rotation, so that the TOTP secrets no longer need the old key. Recovery "
        "codes are kept as keyed hashes and can't be re-hashed: those made under the old key work only while it "
        "stays in MFA_ENCRYPTION_KEY_FALLBACKS or DJANGO_SECRET_KEY_FALLBACKS (or until their owners make new "
        "ones). Safe to run again and beside the service. Prints rotated=N unreadable=N; "
        "exits 1 when a secret no key reads is found (the users' ids are listed: reset their factors in the admin)."
    )

    def handle(self, *args, **options):
        result = totp.secrets_rotate()
        self.stdout.write(f"rotated={result.rotated} unreadable={len(result.unreadable_user_ids)}")
        if result.unreadable_user_ids:
            raise CommandError(
                f"no key reads the TOTP secret of user id(s) {result.unreadable_user_ids}: reset their factors"
            )
