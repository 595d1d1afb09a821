from django.urls import path
from summaries import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/summarize", views.summarize, name="summarize"),
    path("api/summarize/stream", views.summarize_stream, name="summarize-stream"),
    path("api/async/summarize", views.summarize_async, name="summarize-async"),
]
