"""Client credentials, access tokens and SMART scopes: no HTTP and no SQL here."""
