-- One database per service (each service owns its own).
CREATE DATABASE points;
