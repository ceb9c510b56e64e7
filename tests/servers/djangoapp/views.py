"""The same routes as tests/servers/app.py, as Django views (WSGI and ASGI)."""
import time

from django.http import HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse(b"hello world\n", content_type="text/plain")


def user(request, user_id):
    return HttpResponse(b'{"user": "%s"}\n' % user_id.encode(), content_type="application/json")


def missing(request):
    return HttpResponse(b"not found\n", status=404)


def error(request):
    return HttpResponse(b"internal error\n", status=500)


def sleep(request):
    time.sleep(int(request.GET.get("ms", "50")) / 1000)
    return HttpResponse(b"slept\n")


def stream(request):
    """Streaming response written over time: `parts` parts, `ms` apart."""
    parts = int(request.GET.get("parts", "3"))
    ms = int(request.GET.get("ms", "20"))

    def gen():
        for i in range(parts):
            if i:
                time.sleep(ms / 1000)
            yield b"part %d\n" % i

    return StreamingHttpResponse(gen(), content_type="text/plain")


def big(request):
    kb = int(request.GET.get("kb", "256"))
    return HttpResponse(b"x" * (kb * 1024), content_type="application/octet-stream")


@csrf_exempt
def echo(request):
    return HttpResponse(b"%d\n" % len(request.body), status=201)


def nocontent(request):
    return HttpResponse(status=204)


def notmodified(request):
    return HttpResponseNotModified()
