"""The shop's JSON API, one blueprint per concept."""
