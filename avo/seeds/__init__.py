"""Seeds taken from installed kernel sources (P2-h): copied on the user's machine, never committed."""
