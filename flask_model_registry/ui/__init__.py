"""The management and audit console: server-rendered pages at ``<prefix>/ui/`` over the registry.

Importing this package attaches every page and form to the console's blueprint; the extension mounts
it with :func:`register_ui` unless ``MODEL_REGISTRY_UI_ENABLED`` is false.
"""

from __future__ import annotations

from . import actions, auth, deleting, pictures, views
from .blueprint import bp, register_ui

__all__ = ["actions", "auth", "bp", "deleting", "pictures", "register_ui", "views"]
