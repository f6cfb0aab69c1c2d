"""The HTTP edge: bytes in, bytes out (the /collect endpoint, bodies, CORS, admin routes, protocol limits)."""
