from django.conf import settings
from django.urls import path
from summaries import metrics, views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/summarize", views.summarize, name="summarize"),
    path("api/summarize/stream", views.summarize_stream, name="summarize-stream"),
    path("api/async/summarize", views.summarize_async, name="summarize-async"),
]

if settings.METRICS:
    urlpatterns.append(path("metrics", metrics.metrics, name="metrics"))
