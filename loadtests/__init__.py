"""Load tests: shopper journeys for locust, load shapes, profiles with SLO gates.

``vigil loadtest PROFILE --host URL`` runs a profile from ``loadtests/profiles/``
headless and exits 0 when every gate passes, 1 when one fails, 2 on bad input.
"""
