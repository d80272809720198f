"""One router per resource; :func:`tuner.api.app.create_app` mounts them."""
