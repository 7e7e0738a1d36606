//! Routing: field rules that turn a session into an outbound tag.
