from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("write/<str:alias>", views.write_then_bridge),
    path("stream", views.stream),
    path("deadline", views.deadline_left),
    path("deadline/async", views.deadline_left_async),
    path("deadline/missed", views.deadline_missed),
]
