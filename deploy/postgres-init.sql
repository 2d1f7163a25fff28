-- One database per service (each service owns its own).
CREATE DATABASE points;
CREATE DATABASE rewards;
-- Membership's data keys, apart from its data (short backup retention: see README).
CREATE DATABASE membership_keys;
