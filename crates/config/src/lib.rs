//! V2Ray 4.34 configuration: JSON (with comments) and TOML into typed, validated structs.
