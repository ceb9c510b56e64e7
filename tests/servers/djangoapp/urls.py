from django.conf import settings
from django.urls import include, path

from . import views

urlpatterns = [
    path("hello", views.hello),
    path("users/<str:user_id>", views.user),
    path("missing", views.missing),
    path("error", views.error),
    path("sleep", views.sleep),
    path("stream", views.stream),
    path("big", views.big),
    path("echo", views.echo),
    path("nocontent", views.nocontent),
    path("notmodified", views.notmodified),
]

if "django_prometheus" in settings.INSTALLED_APPS:
    urlpatterns.append(path("", include("django_prometheus.urls")))  # its /metrics
