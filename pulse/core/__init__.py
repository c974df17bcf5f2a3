"""The pure domain: types, rules and policies. Imports only the standard library and msgspec."""
