"""The gateway's HTTP endpoints, one router per part of the storefront."""
