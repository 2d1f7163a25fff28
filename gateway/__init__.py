"""The HTTP gateway (port 8080): the storefront's member card and member centre, buyer tokens,
the embeddable widget, over the suite's gRPC services. It holds no durable data."""
