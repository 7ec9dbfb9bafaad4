"""The HTTP edge: routing, auth, content negotiation and error mapping."""
