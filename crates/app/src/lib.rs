//! The application: turns a configuration into running inbounds, a router and outbounds.
