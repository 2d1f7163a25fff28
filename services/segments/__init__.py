"""The segments service (人群与标签): member facts kept from the other services' events, tags,
rule segments compiled to SQL, the documents' predefined groups."""
