"""Identities: organizations, users, credentials and sessions."""
