DROP TABLE throttle_guesses;
DROP TABLE throttle_quotas;
