from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from tasks import checks  # noqa: F401 - registers the system checks
        from tasks.metrics import OperatorCollector

        if not any(isinstance(c, OperatorCollector) for c in list(REGISTRY._collector_to_names)):
            REGISTRY.register(OperatorCollector())
