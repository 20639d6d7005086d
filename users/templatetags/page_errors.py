"""``{% page_errors as problems %}``: every error of every bound form on the page, for the layout's
error summary and its title (WCAG 3.3.1: an error is identified, and a screen reader hears it first;
2.4.2: the title says the page came back with errors)."""

from __future__ import annotations

from typing import Any

from django import template
from django.core.exceptions import NON_FIELD_ERRORS
from django.forms import BaseForm

register = template.Library()


@register.simple_tag(takes_context=True)
def page_errors(context: template.Context) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    seen: set[int] = set()
    for form in _forms(context.flatten().values()):
        if id(form) in seen or not form.is_bound:
            continue
        seen.add(id(form))
        for name, errors in form.errors.items():
            href = "" if name == NON_FIELD_ERRORS or name not in form.fields else f"#{form[name].auto_id}"
            problems.extend({"href": href, "message": str(message)} for message in errors)
    return problems


def _forms(values: Any) -> list[BaseForm]:
    """Forms in the context, and in its dicts, lists and tuples one level down (the security page's)."""
    found: list[BaseForm] = []
    # type(), not isinstance(): isinstance() evaluates the context's lazy values (the CSRF token, the
    # user), and an evaluated CSRF token set a cookie on every page (a review).
    for value in values:
        kind = type(value)
        if issubclass(kind, BaseForm):
            found.append(value)
        elif kind is dict:
            found.extend(v for v in value.values() if issubclass(type(v), BaseForm))
        elif kind is list or kind is tuple:
            for item in value:
                if issubclass(type(item), BaseForm):
                    found.append(item)
                elif type(item) is tuple:
                    found.extend(v for v in item if issubclass(type(v), BaseForm))
    return found
