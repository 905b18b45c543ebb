"""Routes for outbound event hooks (staff only); included under /api/v1/."""

from __future__ import annotations

from django.urls import path

from runs import hooks_api as api

urlpatterns = [
    path("hooks", api.HookList.as_view(), name="hook-list"),
    path("hooks/<str:name>", api.HookDetail.as_view(), name="hook-detail"),
    path("hooks/<str:name>/deliveries", api.HookDeliveryList.as_view(), name="hook-delivery-list"),
    path(
        "hooks/<str:name>/deliveries/<int:pk>/redeliver",
        api.HookRedeliver.as_view(),
        name="hook-redeliver",
    ),
]
