"""Development servers (embedded Redis and PostgreSQL, an SMTP sink): only the CLI and tests
use them."""
