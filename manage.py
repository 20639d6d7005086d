#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankproject.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:  # Django reads the settings here, after --settings; `help` and `version` need none
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:  # a refused setting: one line naming it, not a traceback
        sys.exit(f"refusing to start: {exc}")


if __name__ == "__main__":
    main()
