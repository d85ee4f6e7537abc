"""The registry service: which model version is best, its files, and the promotion gate (RegistryService)."""
