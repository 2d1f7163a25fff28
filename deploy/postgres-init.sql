-- One database per service (each service owns its own).
CREATE DATABASE points;
CREATE DATABASE rewards;
CREATE DATABASE segments;
-- Membership's data keys, apart from its data (short backup retention: see README).
CREATE DATABASE membership_keys;
