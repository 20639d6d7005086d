# The production image: gunicorn serves the web app (static files through WhiteNoise); the same
# image runs migrations, the Dramatiq worker and the scheduler (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes reuse this layer.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time (WhiteNoise serves them with DJANGO_DEBUG=false, which
# requires a secret key). The key is a throwaway for this one command: it is not kept in the image
# environment, so a container started without its own DJANGO_SECRET_KEY is refused at start-up.
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    DJANGO_DEBUG=false \
    python manage.py collectstatic --noinput

# Run as an unprivileged user; the code and collected static files stay owned by root (read-only).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin bank
USER bank

EXPOSE 8000
# gunicorn.conf.py (read from /app) writes the access log to stdout, without query strings.
CMD ["gunicorn", "bankproject.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2"]
