from django.core.management.base import BaseCommand

from users.services import signup


class Command(BaseCommand):
    help = (
        "One pass: delete accounts never verified nor logged in, and free usernames reserved by sign-up "
        "answers, once older than UNVERIFIED_ACCOUNT_MAX_AGE seconds (default a week), then exit. The "
        "scheduler runs this every hour."
    )

    def handle(self, *args, **options):
        counts = signup.stale_signups_purge()
        self.stdout.write(" ".join(f"{key}={value}" for key, value in counts.items()))
