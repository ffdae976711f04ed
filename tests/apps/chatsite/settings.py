"""A minimal Django project with Channels, for corral's ASGI tests."""
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "chatsite.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "channels"]
MIDDLEWARE = []
ASGI_APPLICATION = "chatsite.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {}
USE_TZ = True
