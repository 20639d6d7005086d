import os

from django.core.wsgi import get_wsgi_application

from bankproject.middleware import reject_undecodable_charsets

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankproject.settings")

# Django's request object can't be built for some charsets; that is answered before it is.
application = reject_undecodable_charsets(get_wsgi_application())
