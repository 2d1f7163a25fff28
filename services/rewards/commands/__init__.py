"""What callers ask of the rewards service, as plain data the servicer builds from requests, one
module per capability. Constructing one checks its ids and fields (kit.validation.check_ids
first), so every handler receives a well-formed request."""
