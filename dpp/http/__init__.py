"""HTTP plumbing shared by every endpoint: auth, problems, errors, middleware, negotiation, parsers,
pagination, OpenAPI pieces, rate limits, health/readiness/metrics views."""
