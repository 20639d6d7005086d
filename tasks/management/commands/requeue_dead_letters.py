import dramatiq
from django.core.management.base import BaseCommand, CommandError
from dramatiq.brokers.redis import RedisBroker

from tasks import dead_letters


class Command(BaseCommand):
    help = "List (--list) or re-enqueue Dramatiq's dead-lettered messages of a queue (default: critical)."

    def add_arguments(self, parser):
        parser.add_argument("--queue", default="critical")
        parser.add_argument("--list", action="store_true", help="only list them")

    def handle(self, *args, queue: str, list: bool, **options):
        broker = dramatiq.get_broker()
        if not isinstance(broker, RedisBroker):
            raise CommandError("dead letters can only be read from the Redis broker")
        if list:
            for message in dead_letters.dead_letters(broker, queue):
                self.stdout.write(f"{message.message_id} {message.actor_name}{message.args}")
            return
        done = dead_letters.requeue(broker, queue)
        for item in done:
            self.stdout.write(f"{item.message_id} {item.actor_name}: {item.how}")
        self.stdout.write(f"{len(done)} dead letter(s) handled")
