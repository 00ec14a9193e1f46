from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gpu_instances.views import instance_panel
from jobs.metrics_endpoint import metrics

# The admin's app sidebar takes a quarter of a 1280 px screen from the list tables; the home page lists the apps.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("jobs.urls")),
    path("metrics", metrics, name="metrics"),
    # The web pages: every one of them requires a login.
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("instance/", instance_panel, name="instance-panel"),
    path("", include("jobs.web_urls")),
]
