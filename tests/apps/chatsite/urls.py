from django.http import JsonResponse
from django.urls import path


def hello(request):
    return JsonResponse({"django": "asgi", "path": request.path,
                         "scheme": request.scheme, "method": request.method})


async def async_hello(request):
    return JsonResponse({"async": True, "query": request.GET.get("q", "")})


urlpatterns = [path("hello/", hello), path("async/", async_hello)]
