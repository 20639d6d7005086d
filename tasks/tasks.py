"""Worker plumbing's own periodic actors (the users app's actors are in ``users/tasks.py``).

Discovered by django-dramatiq as ``tasks.tasks`` (it imports ``<app>.tasks`` of every app).
"""

from django_dramatiq.tasks import delete_old_tasks
from dramatiq_crontab import cron

# django-dramatiq's task rows (the admin's task list) are kept for a day, cleaned every hour.
cron("17 * * * *")(delete_old_tasks)
