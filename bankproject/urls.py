from django.contrib import admin
from django.urls import include, path

from bankproject import api_docs, health, metrics
from users.admin import queue_overview

admin.site.index_template = "admin/simplebank_index.html"  # adds the queue overview link

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.public, name="metrics"),
    path("metrics/operator", metrics.operator, name="metrics-operator"),
    path("admin/queues/", admin.site.admin_view(queue_overview), name="admin-queue-overview"),
    path("admin/", admin.site.urls),
    path("api/schema/", api_docs.SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file, so the CSP needs no inline script.
    path("api/docs/", api_docs.SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("users.urls")),
]
