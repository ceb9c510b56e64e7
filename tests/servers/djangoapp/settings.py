"""Minimal Django settings for the test and bench app (no database, no sessions).

REDPROBE_DJANGO_PROMETHEUS=1 adds django-prometheus's middleware, for the bench's
side-by-side comparison with the middleware redprobe replaces.
"""
import os

SECRET_KEY = "redprobe-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp.urls"
USE_TZ = True
DATA_UPLOAD_MAX_MEMORY_SIZE = None  # the tests upload multi-MB bodies
DATABASES = {}
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
LOGGING = {"version": 1, "disable_existing_loggers": True}

if os.environ.get("REDPROBE_DJANGO_PROMETHEUS") == "1":
    INSTALLED_APPS = ["django_prometheus"]
    MIDDLEWARE = (
        ["django_prometheus.middleware.PrometheusBeforeMiddleware"]
        + MIDDLEWARE
        + ["django_prometheus.middleware.PrometheusAfterMiddleware"]
    )
