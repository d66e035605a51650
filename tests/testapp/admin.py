from __future__ import annotations

from django.contrib import admin

from .models import Product

# Registered so the task admin's host-object column can link to it.
admin.site.register(Product)
