from django.core.management.base import BaseCommand

from users.services import delivery


class Command(BaseCommand):
    help = (
        "One pass: queue again every email (of every kind) still unsent VERIFY_EMAIL_REDISPATCH_AFTER "
        "seconds after it was queued (or after its last attempt stalled), fail the expired and the "
        "over-attempted ones, then exit. The scheduler runs this every minute."
    )

    def handle(self, *args, **options):
        counts = delivery.redispatch_due()
        self.stdout.write(" ".join(f"{key}={value}" for key, value in counts.items()))
