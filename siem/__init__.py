"""The SIEM store: events and samples behind one protocol, several backends."""
