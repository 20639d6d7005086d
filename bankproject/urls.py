from django.contrib import admin
from django.urls import include, path

from bankproject import api_docs, health, metrics
from tasks.admin_views import DeadLettersView
from users.admin import admin_login, queue_overview

admin.site.index_template = "admin/simplebank_index.html"  # adds the queue overview link
admin.site.site_header = "Simple Bank operations"  # on every admin page, the log-in page too
admin.site.site_title = "Simple Bank operations"  # the <title> suffix
admin.site.index_title = "Operations and accounts"

# Requeueing the critical queue's dead letters retries emails: the power of the email list's
# "Retry failed emails" action, so the same permission (superusers have it; other staff are given it).
dead_letters_view = DeadLettersView.as_view(permission="users.change_outboundemail")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.public, name="metrics"),
    path("metrics/operator", metrics.operator, name="metrics-operator"),
    path("admin/queues/", admin.site.admin_view(queue_overview), name="admin-queue-overview"),
    path("admin/queues/dead-letters/", admin.site.admin_view(dead_letters_view), name="admin-dead-letters"),
    path("admin/login/", admin_login, name="admin-login"),  # throttled, then Django's
    path("admin/", admin.site.urls),
    path("api/schema/", api_docs.SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file, so the CSP needs no inline script.
    path("api/docs/", api_docs.SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("users.urls")),
]
