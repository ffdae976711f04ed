import os

from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.urls import path


def hello(request):
    return JsonResponse({"django": "asgi", "path": request.path,
                         "scheme": request.scheme, "method": request.method})


async def async_hello(request):
    return JsonResponse({"async": True, "query": request.GET.get("q", "")})


def stream(request):
    """A sync view streaming 20 pieces (asgiref runs it on a thread)."""
    return StreamingHttpResponse(f"piece {i}\n" for i in range(20))


def own_source(request):
    """A sync view sending a file."""
    return FileResponse(open(os.path.abspath(__file__), "rb"))


urlpatterns = [path("hello/", hello), path("async/", async_hello), path("stream/", stream),
               path("file/", own_source)]
