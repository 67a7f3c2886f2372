"""The web UI: an overview dashboard and the JSON API behind its charts.

``create_app(settings)`` builds the Flask app; ``vigil web`` serves it.
"""
