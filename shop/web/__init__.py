"""Server-rendered HTML pages of the shop."""
