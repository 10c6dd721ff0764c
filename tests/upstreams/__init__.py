"""Loopback imitations of the providers' upstream APIs, faithful to PROVIDER-APIS.md: real
paths, auth headers, field names, error bodies, pagination and rate limits. Each runs as a real
HTTP server on 127.0.0.1 in a thread, so providers are tested over HTTP through their
egress-checked client exactly as in production."""
