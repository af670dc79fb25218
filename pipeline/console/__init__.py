"""The operator console: web pages, JSON API, users and reviews."""
