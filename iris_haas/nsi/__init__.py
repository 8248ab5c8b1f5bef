"""OGF NSI Connection Service 2.0: Iris as a requester of an external network provider."""
