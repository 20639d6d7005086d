FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time and served by WhiteNoise; the key is only for this step.
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_DEBUG=false python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 bank \
    && chown -R bank /app

USER bank
EXPOSE 8000
CMD ["gunicorn", "bankproject.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
